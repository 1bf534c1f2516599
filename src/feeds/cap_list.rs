//! Lists of CAP messages, the way agencies publish them: an Atom feed (`<feed>` of
//! `<entry>`, each with an `<id>`, `<updated>` and a `<link>` to the CAP message,
//! as MeteoAlarm and national weather services do) or an RSS 2.0 channel (`<item>`
//! with a `<guid>`, `<pubDate>` and a `<link>` or an `<enclosure>`). A `kind = "cap"`
//! feed whose URL answers with such a list reads each message it links to; the poller
//! fetches only entries that are new or updated since the last poll.

use xml::reader::{EventReader, ParserConfig, XmlEvent};

/// Which list a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Atom,
    Rss,
}

/// One message a list points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The entry's id (Atom `<id>`, RSS `<guid>`, else its link).
    pub id: String,
    /// When it was last changed, as the list says (compared as text).
    pub updated: String,
    /// The CAP message's URL, resolved against the list's.
    pub link: String,
}

/// The most entries read from one list.
pub const MAX_ENTRIES: usize = 5_000;

/// Whether `xml` is an Atom feed or an RSS channel (by its root element).
pub fn list_kind(xml: &str) -> Option<ListKind> {
    let (local, _) = super::cap::root_element(xml).ok()?;
    match local {
        "feed" => Some(ListKind::Atom),
        "rss" | "RDF" => Some(ListKind::Rss),
        _ => None,
    }
}

/// The entries of an Atom feed or RSS channel, links resolved against `list_url`.
/// Entries without a link are left out.
pub fn read_list(xml: &str, list_url: &str) -> Result<Vec<ListEntry>, String> {
    // A list needs no DOCTYPE; one is refused (entity declarations are not read).
    super::cap::root_element(xml).map_err(|e| e.to_string())?;
    let base = reqwest::Url::parse(list_url).ok();
    let reader = EventReader::new_with_config(
        xml.as_bytes(),
        ParserConfig::new()
            .trim_whitespace(true)
            .cdata_to_characters(true),
    );
    let mut entries = Vec::new();
    let mut depth = 0usize;
    // Inside an entry: its id, updated, links (href, rel, type) and RSS link text.
    let mut entry: Option<Draft> = None;
    let mut field: Option<String> = None;
    for event in reader {
        match event.map_err(|e| format!("the list is not well-formed XML: {e}"))? {
            XmlEvent::StartElement {
                name, attributes, ..
            } => {
                depth += 1;
                if depth > 64 {
                    return Err("the list nests deeper than 64 elements".into());
                }
                let local = name.local_name.as_str();
                let attr = |n: &str| {
                    attributes
                        .iter()
                        .find(|a| a.name.local_name == n)
                        .map(|a| a.value.clone())
                };
                match (&mut entry, local) {
                    (None, "entry" | "item") => entry = Some(Draft::default()),
                    (Some(d), "link") => {
                        if let Some(href) = attr("href") {
                            d.links.push((href, attr("rel"), attr("type")));
                        } else {
                            field = Some("link".into());
                        }
                    }
                    (Some(d), "enclosure") => {
                        if let Some(url) = attr("url") {
                            d.links.push((url, Some("enclosure".into()), attr("type")));
                        }
                    }
                    (Some(_), "id" | "guid" | "updated" | "pubDate" | "published") => {
                        field = Some(local.to_string());
                    }
                    _ => {}
                }
            }
            XmlEvent::Characters(text) => {
                if let (Some(d), Some(f)) = (&mut entry, &field) {
                    match f.as_str() {
                        "id" | "guid" => d.id = Some(text),
                        "updated" | "pubDate" => d.updated = Some(text),
                        "published" if d.updated.is_none() => d.updated = Some(text),
                        "link" => d.links.push((text, None, None)),
                        _ => {}
                    }
                }
            }
            XmlEvent::EndElement { name } => {
                depth = depth.saturating_sub(1);
                field = None;
                if matches!(name.local_name.as_str(), "entry" | "item")
                    && let Some(d) = entry.take()
                    && let Some(e) = d.finish(base.as_ref())
                {
                    entries.push(e);
                    if entries.len() >= MAX_ENTRIES {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(entries)
}

/// A link of an entry: (href, rel, type).
type Link = (String, Option<String>, Option<String>);

#[derive(Default)]
struct Draft {
    id: Option<String>,
    updated: Option<String>,
    links: Vec<Link>,
}

impl Draft {
    fn finish(self, base: Option<&reqwest::Url>) -> Option<ListEntry> {
        // The CAP message: a link typed as CAP, else XML, else the alternate (or
        // untyped) one.
        let pick =
            |want: &dyn Fn(&Link) -> bool| self.links.iter().find(|l| want(l)).map(|l| l.0.clone());
        let href = pick(&|l| l.2.as_deref().is_some_and(|t| t.contains("cap")))
            .or_else(|| pick(&|l| l.2.as_deref().is_some_and(|t| t.contains("xml"))))
            .or_else(|| pick(&|l| l.1.as_deref().is_none_or(|r| r == "alternate")))?;
        let href = href.trim();
        let link = match base {
            Some(b) => b.join(href).ok()?.to_string(),
            None => href.to_string(),
        };
        Some(ListEntry {
            id: self
                .id
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| link.clone()),
            updated: self.updated.unwrap_or_default().trim().to_string(),
            link,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atom_and_rss_lists_give_their_cap_links() {
        let atom = include_str!("../../tests/data/cap/list-atom.xml");
        assert_eq!(list_kind(atom), Some(ListKind::Atom));
        let entries = read_list(atom, "https://feeds.example.org/alerts").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].link, "https://feeds.example.org/alerts/1.cap");
        assert_eq!(entries[0].id, "urn:oid:2.49.0.1.246.0.0.2026.11.29.1");
        assert_eq!(entries[1].updated, "2026-11-29T11:00:00+02:00");
        let rss = r#"<rss version="2.0"><channel><title>预警</title>
  <item><guid>a1</guid><pubDate>Sun, 29 Nov 2026 08:00:00 GMT</pubDate>
    <link>http://alerts.example.cn/cap/a1.xml</link></item>
  <item><guid>a2</guid><enclosure url="cap/a2.xml" type="application/cap+xml" length="1"/>
    <link>http://alerts.example.cn/page/a2.html</link></item>
</channel></rss>"#;
        assert_eq!(list_kind(rss), Some(ListKind::Rss));
        let entries = read_list(rss, "http://alerts.example.cn/rss").unwrap();
        assert_eq!(entries[0].link, "http://alerts.example.cn/cap/a1.xml");
        assert_eq!(entries[1].link, "http://alerts.example.cn/cap/a2.xml");
        // A CAP message is not a list; a DOCTYPE is refused.
        assert_eq!(
            list_kind(r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"/>"#),
            None
        );
        assert!(read_list("<!DOCTYPE feed [<!ENTITY x 'y'>]><feed/>", "http://h/").is_err());
    }
}
