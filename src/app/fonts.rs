//! The fonts egui draws with: its default fonts (Latin, symbols, emoji) and the bundled
//! CJK subset as the fallback for every family. Everything is compiled into the
//! binary, so names render the same offline and with no system fonts installed.
//!
//! A character no font has is drawn as egui's replacement glyph, '◻' (from the default
//! emoji font): a visible box, never a blank.

use bevy_egui::egui;

/// Noto Sans CJK SC, subset by `assets/fonts/make_subset.py`: GB 2312, the whole CJK
/// Unified Ideographs block (the 通用规范汉字表 and the Big5 and HKSCS hanzi in it),
/// Big5 and HKSCS, and the 通用规范汉字表's and HKSCS's characters beyond that block.
pub const CJK_FONT: &[u8] = include_bytes!("../../assets/fonts/NotoSansCJKsc-Regular-subset.otf");

const CJK_FONT_NAME: &str = "noto-sans-cjk-sc";

/// Registers the bundled CJK font as a fallback for every egui font family.
pub fn install_fonts(ctx: &egui::Context) {
    ctx.set_fonts(font_definitions());
}

/// egui's default fonts with the CJK font appended to the proportional and monospace
/// families.
pub fn font_definitions() -> egui::FontDefinitions {
    let mut fonts = egui::FontDefinitions::default();
    fonts.font_data.insert(
        CJK_FONT_NAME.to_owned(),
        std::sync::Arc::new(egui::FontData::from_static(CJK_FONT)),
    );
    for family in [egui::FontFamily::Proportional, egui::FontFamily::Monospace] {
        fonts
            .families
            .entry(family)
            .or_default()
            .push(CJK_FONT_NAME.to_owned());
    }
    fonts
}

#[cfg(test)]
mod tests {
    use super::*;
    use egui::epaint::text::Glyph;
    use egui::{Color32, FontId};

    /// Personal names, Hong Kong and Macau place names, and traditional characters that
    /// the GB 2312 subset drew as boxes.
    const NAMED: &str = "喆堃珺玥昇埗滘氹區與機";

    /// A sample of the 通用规范汉字表 (8,105): common characters, the rarer level-3 ones
    /// (names, places, science), and those encoded in Extension A and beyond.
    const TONGYONG_SAMPLE: &str = "一乙二十中国人的了是在不有这个上们来到时大地为子\
        琀珺掭堎埼掎埫堌晢掞埪壸聍菝萚菥莿勚萆菂菍菼萣菉梼梽桲梾桯梣梌桹敔厣硔鿎硙硚\
        鿍鿏彟嬿鬒蘘欂醵颥甗巇酅髎犨爔瀱瀹瀼瀵襫孅骦耰瓖鬘趯罍鼱鳠鳡鳣爟爚灈韂糵蘼礵鹴\
        㑇㑊㕮㘎㙍㛃㟃㤘㧐㧑㧟㫰㬊㭎㮾㰀㳇㸆㺄㻬㽏㿠䁖䂮䃅䅟䌹䎃䏝䓖䗖䜣䝙䢺䥽䦃䲟䴓䶮\
        𠙶𬣙𨙸𬇕𬣞𬘓𫭟𫭢𫇭𫐄𫵷𣲘𣲗𬇙𬣡𫸩𨚕𫘜𬘘𫘝𦭜𬨂𬀩𬀪𬬩𫍣𬣳𬩽𬮿𬯀𫰛𬳵𬳶𫠊𬍛\
        𬉼𠳐𥻗𠅤𡎚𡐓𪤗𣗋𥔲𩽾𩾃𩾌𨟠𨭉𤫉𫚭";

    /// Traditional characters of Big5 (levels 1 and 2) as written in Taiwan and Hong Kong.
    const BIG5_SAMPLE: &str = "區與機臺灣國際醫院鐵路車站體育館廣場圖書館龍鳳麵飯雞鴨\
        讓應當發現經濟學運動開關電腦網絡資訊號碼銀行郵政聯絡處警察消防隊義務議員選舉\
        龜龘鬱鑿齉籲爨驫麤灩鸞癰纘蠻讖釁韆屬戀變歡權聽響顯驗體鑒鑽";

    /// Hong Kong usage beyond Big5 (HKSCS): Cantonese words and place names.
    const HK_SAMPLE: &str = "嘅咗嚟冇啲嘢噉嗰攰冚氹埗滘邨啱嘥𨋢𠝹𡃁𠱁㗎㷫";

    /// Unassigned in Unicode: in no font.
    const NO_FONT_HAS: char = '\u{0378}';

    fn context() -> egui::Context {
        let ctx = egui::Context::default();
        install_fonts(&ctx);
        // Fonts are built at the start of a pass.
        let mut output = ctx.run_ui(egui::RawInput::default(), |_| {});
        output.textures_delta.clear();
        ctx
    }

    fn glyph(ctx: &egui::Context, c: char, font: &FontId) -> Glyph {
        ctx.fonts_mut(|f| {
            let galley = f.layout_no_wrap(c.to_string(), font.clone(), Color32::WHITE);
            galley.rows[0].glyphs[0]
        })
    }

    /// How much ink the glyph puts on screen: the summed coverage of its texels in the
    /// font atlas.
    fn ink(ctx: &egui::Context, g: &Glyph) -> u64 {
        let image = ctx.fonts(|f| f.image());
        let [x0, y0] = g.uv_rect.min.map(usize::from);
        let [x1, y1] = g.uv_rect.max.map(usize::from);
        (y0..y1)
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .map(|(x, y)| u64::from(image.pixels[y * image.size[0] + x].a()))
            .sum()
    }

    /// The characters of `text` drawn as the replacement box in either family: each
    /// laid out alone with the installed fonts, its glyph is the one a character no
    /// font has gets.
    fn missing(ctx: &egui::Context, text: &str) -> String {
        let mut out = String::new();
        for font in [FontId::proportional(14.0), FontId::monospace(14.0)] {
            let replacement = glyph(ctx, NO_FONT_HAS, &font).uv_rect;
            for c in text.chars().filter(|c| !c.is_whitespace()) {
                if glyph(ctx, c, &font).uv_rect == replacement && !out.contains(c) {
                    out.push(c);
                }
            }
        }
        out
    }

    #[test]
    fn names_places_and_traditional_characters_draw_their_own_glyphs() {
        let ctx = context();
        let font = FontId::proportional(14.0);
        let replacement = glyph(&ctx, NO_FONT_HAS, &font);
        for c in NAMED.chars() {
            let g = glyph(&ctx, c, &font);
            assert!(
                g.uv_rect.min != replacement.uv_rect.min,
                "{c} (U+{:04X}) is drawn as the replacement box",
                c as u32
            );
            assert!(ink(&ctx, &g) > 0, "{c} draws nothing");
        }
        assert_eq!(missing(&ctx, NAMED), "", "no glyph for these");
    }

    #[test]
    fn the_tongyong_guifan_list_and_big5_and_hong_kong_characters_have_glyphs() {
        let ctx = context();
        assert_eq!(missing(&ctx, TONGYONG_SAMPLE), "", "通用规范汉字表");
        assert_eq!(missing(&ctx, BIG5_SAMPLE), "", "Big5");
        assert_eq!(missing(&ctx, HK_SAMPLE), "", "Hong Kong");
    }

    #[test]
    fn latin_punctuation_and_fullwidth_forms_still_render() {
        let ctx = context();
        let text = "Zhongshu 中枢 0123 ·—“”…、。，！？：；（）《》【】「」『』￥％＋－＝";
        assert_eq!(missing(&ctx, text), "");
    }

    #[test]
    fn a_character_no_font_has_is_drawn_as_a_visible_box() {
        let ctx = context();
        for font in [FontId::proportional(14.0), FontId::monospace(14.0)] {
            let box_glyph = glyph(&ctx, '◻', &font);
            for c in [NO_FONT_HAS, '\u{E123}', '\u{10FFFD}'] {
                let g = glyph(&ctx, c, &font);
                assert!(g.advance_width > 0.0, "U+{:04X} takes no room", c as u32);
                assert!(!g.uv_rect.is_nothing(), "U+{:04X} is blank", c as u32);
                assert_eq!(
                    g.uv_rect, box_glyph.uv_rect,
                    "U+{:04X} is not the ◻ box",
                    c as u32
                );
                assert!(ink(&ctx, &g) > 0, "U+{:04X} is drawn with no ink", c as u32);
            }
        }
    }
}
