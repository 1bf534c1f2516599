#!/usr/bin/env python3
"""Rebuilds NotoSansCJKsc-Regular-subset.otf, the one font Zhongshu bundles.

Source: Noto Sans CJK SC Regular (version 2.004), face 2 of NotoSansCJK-Regular.ttc in
Debian's package fonts-noto-cjk, version 1:20220127+repack1-1 (SIL OFL 1.1, see OFL.txt).
Tool: fontTools' subsetter (`pip install fonttools`, 4.x).

    apt-get download fonts-noto-cjk=1:20220127+repack1-1
    dpkg-deb -x fonts-noto-cjk_*.deb /tmp/noto-cjk
    python3 assets/fonts/make_subset.py \
        /tmp/noto-cjk/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

What the subset covers (every character below that the source face maps):
- ASCII, GB 2312 (all of it: 6,763 hanzi and its symbols) and the two extra symbols the
  previous subset had, so nothing that rendered before stops rendering;
- the whole CJK Unified Ideographs block U+4E00-U+9FFF: a sound superset of the
  通用规范汉字表 (8,105) in that block and of every Big5 and HKSCS hanzi there;
- every character of Big5 and of Big5-HKSCS (Python's codecs), symbols included;
- the 通用规范汉字表's characters in Extension A (listed below) and every character of
  Extensions B to F the face has (the list's rarer characters and the HKSCS ones);
- Latin-1, general punctuation, CJK symbols and punctuation, Bopomofo, CJK
  compatibility forms and the fullwidth and halfwidth forms;
- the .notdef box keeps its outline.

Only the horizontal layout features egui's shaper uses are kept (no vertical forms, no
regional `locl` variants: the SC face's own glyphs are used), and hinting is dropped.
"""

import hashlib
import subprocess
import sys
from pathlib import Path

from fontTools.ttLib import TTCollection

SOURCE_SHA256 = "b76b0433203017ca80401b2ee0dd69350349871c4b19d504c34dbdd80541690a"
FACE_SC = 2
OUT = Path(__file__).with_name("NotoSansCJKsc-Regular-subset.otf")

# The 通用规范汉字表 (2013) characters encoded in CJK Extension A.
TONGYONG_EXT_A = (
    "㑇㑊㕮㘎㙍㙘㙦㛃㛚㛹㟃㠇㠓㤘㥄㧐㧑㧟㫰㬊㬎㬚㭎㭕㮾㰀㳇㳘㳚㴔㵐㶲㸆㸌㺄㻬㽏㿠"
    "䁖䂮䃅䃎䅟䌹䎃䎖䏝䏡䏲䐃䓖䓛䓨䓫䓬䗖䗛䗪䗴䜣䝙䢺䢼䣘䥽䦃䲟䲠䲢䴓䴔䴕䴖䴗䴘䴙䶮"
)

BLOCKS = [
    (0x0020, 0x007E),  # ASCII
    (0x00A0, 0x00FF),  # Latin-1
    (0x2000, 0x206F),  # general punctuation
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31BF),  # Bopomofo extended
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF00, 0xFFEF),  # halfwidth and fullwidth forms
    (0x20000, 0x323AF),  # CJK Extensions B to H
]


def decode_double_byte(codec, leads, trails):
    out = set()
    for hi in leads:
        for lo in trails:
            try:
                out.update(ord(c) for c in bytes([hi, lo]).decode(codec))
            except UnicodeDecodeError:
                pass
    return out


def wanted():
    chars = {0x220B, 0x2245}  # ∋ ≅, in the previous subset
    for lo, hi in BLOCKS:
        chars.update(range(lo, hi + 1))
    chars |= decode_double_byte("gb2312", range(0xA1, 0xF8), range(0xA1, 0xFF))
    big5_trails = list(range(0x40, 0x7F)) + list(range(0xA1, 0xFF))
    chars |= decode_double_byte("big5", range(0x81, 0xFF), big5_trails)
    chars |= decode_double_byte("big5hkscs", range(0x81, 0xFF), big5_trails)
    chars |= {ord(c) for c in TONGYONG_EXT_A}
    return chars


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ttc = Path(sys.argv[1])
    digest = hashlib.sha256(ttc.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{ttc}: sha256 {digest}, expected {SOURCE_SHA256} (another version?)")
    face = TTCollection(str(ttc)).fonts[FACE_SC]
    assert face["name"].getDebugName(4) == "Noto Sans CJK SC", face["name"].getDebugName(4)
    cmap = set(face.getBestCmap())
    chars = wanted() & cmap
    unicodes = Path(OUT.with_suffix(".unicodes"))
    unicodes.write_text(",".join(f"U+{c:04X}" for c in sorted(chars)))
    try:
        subprocess.run(
            [
                sys.executable, "-m", "fontTools.subset", str(ttc),
                f"--font-number={FACE_SC}",
                f"--unicodes-file={unicodes}",
                f"--output-file={OUT}",
                "--layout-features=ccmp,kern,mark,mkmk,liga,palt,halt",
                "--drop-tables+=vhea,vmtx,VORG,BASE,STAT",
                "--no-hinting",
                "--notdef-outline",
            ],
            check=True,
        )
    finally:
        unicodes.unlink()
    han = sum(1 for c in chars if 0x3400 <= c <= 0x9FFF or 0x20000 <= c or 0xF900 <= c <= 0xFAFF)
    print(f"{OUT.name}: {OUT.stat().st_size} bytes, {len(chars)} characters, {han} hanzi")


if __name__ == "__main__":
    main()
