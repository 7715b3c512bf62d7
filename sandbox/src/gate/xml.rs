//! A minimal XML element tree, enough to read moto's query-protocol answers (Auto Scaling, EC2)
//! and to write answers the gate composes or rewrites (paging, presenting its own state).

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

    pub fn child_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.children.iter_mut().find(|c| c.name == name)
    }

    /// An element with text.
    pub fn leaf(name: &str, text: impl Into<String>) -> Node {
        Node { name: name.to_string(), text: text.into(), children: vec![] }
    }

    /// An element with children.
    pub fn parent(name: &str, children: Vec<Node>) -> Node {
        Node { name: name.to_string(), text: String::new(), children }
    }

    /// Sets (or adds) a child element's text.
    pub fn set(&mut self, name: &str, text: impl Into<String>) {
        let text = text.into();
        match self.child_mut(name) {
            Some(c) => c.text = text,
            None => self.children.push(Node::leaf(name, text)),
        }
    }

    /// Removes every child element of that name.
    pub fn remove(&mut self, name: &str) {
        self.children.retain(|c| c.name != name);
    }

    /// The document, with `xmlns` on the root element (the SDKs match on names, not namespaces, but
    /// AWS sends one).
    pub fn to_document(&self, xmlns: &str) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        self.write(&mut out, Some(xmlns));
        out
    }

    fn write(&self, out: &mut String, xmlns: Option<&str>) {
        out.push('<');
        out.push_str(&self.name);
        if let Some(ns) = xmlns.filter(|ns| !ns.is_empty()) {
            out.push_str(&format!(" xmlns=\"{ns}\""));
        }
        out.push('>');
        if self.children.is_empty() {
            out.push_str(&super::protocol::xml_escape(&self.text));
        }
        for c in &self.children {
            c.write(out, None);
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
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

    #[test]
    fn writes_what_it_reads() {
        let doc = r#"<R><A><member><N>a &amp; b</N></member></A><T></T></R>"#;
        let mut root = parse(doc).unwrap();
        root.child_mut("A").unwrap().child_mut("member").unwrap().set("M", "<1>");
        let text = root.to_document("urn:x");
        assert!(text.contains(r#"<R xmlns="urn:x">"#), "{text}");
        let back = parse(&text).unwrap();
        assert_eq!(back.path(&["A", "member"]).unwrap().text_of("M"), Some("<1>"));
        assert_eq!(back.path(&["A", "member"]).unwrap().text_of("N"), Some("a & b"));
    }
}
