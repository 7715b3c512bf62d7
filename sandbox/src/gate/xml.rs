//! A minimal XML element tree, enough to read moto's query-protocol answers (Auto Scaling).

use anyhow::{Result, bail};
use quick_xml::{Reader, events::Event};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The descendant at a path of element names.
    pub fn path(&self, names: &[&str]) -> Option<&Node> {
        names.iter().try_fold(self, |n, name| n.child(name))
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Trimmed text of a child element.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }
}

/// Parses a document into its root element.
pub fn parse(xml: &str) -> Result<Node> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<Node> = vec![Node::default()];
    loop {
        match reader.read_event()? {
            Event::Start(e) => stack
                .push(Node { name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(), ..Node::default() }),
            Event::Empty(e) => {
                let node =
                    Node { name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(), ..Node::default() };
                stack.last_mut().expect("root").children.push(node);
            }
            Event::End(_) => {
                let node = stack.pop().expect("balanced");
                let Some(parent) = stack.last_mut() else { bail!("unbalanced XML") };
                parent.children.push(node);
            }
            Event::Text(t) => stack.last_mut().expect("root").text.push_str(&t.xml_content()?),
            Event::CData(t) => stack.last_mut().expect("root").text.push_str(&t.decode()?),
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref()? {
                    Some(c) => c.to_string(),
                    None => match r.decode()?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => format!("&{other};"),
                    },
                };
                stack.last_mut().expect("root").text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut root = stack.pop().expect("root");
    if !stack.is_empty() {
        bail!("truncated XML");
    }
    match root.children.len() {
        1 => Ok(root.children.remove(0)),
        _ => bail!("XML without a single root element"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_members_and_entities() {
        let doc = r#"<?xml version="1.0"?><R xmlns="x"><A><member><N>a &amp; b</N><I><member/><member/></I></member></A><T/></R>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "R");
        let m: Vec<_> = root.path(&["A"]).unwrap().children_named("member").collect();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].text_of("N"), Some("a & b"));
        assert_eq!(m[0].child("I").unwrap().children_named("member").count(), 2);
        assert!(root.child("T").is_some());
    }
}
