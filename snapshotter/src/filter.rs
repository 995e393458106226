//! `Walk` filters in containerd's syntax (`github.com/containerd/containerd/filters`), the part
//! snapshots use: a filter is selectors joined by `,` (all must hold), several filters match
//! when any one does; a selector is a field path (`name`, `parent`, `kind`, `labels.KEY` with
//! `KEY` bare or `"quoted"`), alone (the field is present and not empty) or followed by `==`
//! or `!=` and a bare or quoted value. `~=` (regular expressions) is refused by name rather than
//! ignored.

use std::collections::HashMap;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// Parsed filters: matches when any conjunction matches (or when there are none).
#[derive(Debug, Clone, Default)]
pub struct Filters(Vec<Vec<Selector>>);

/// The fields a snapshot offers to a filter.
pub struct Fields<'a> {
    pub name: &'a str,
    pub parent: &'a str,
    pub kind: &'a str,
    pub labels: &'a HashMap<String, String>,
}

impl Filters {
    pub fn parse(filters: &[String]) -> Result<Filters> {
        let mut out = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            out.push(
                parse_one(f)
                    .map_err(|why| Error::InvalidArgument(format!("filter {f:?}: {why}")))?,
            );
        }
        Ok(Filters(out))
    }

    pub fn matches(&self, fields: &Fields) -> bool {
        self.0.is_empty()
            || self
                .0
                .iter()
                .any(|conj| conj.iter().all(|s| selector_matches(s, fields)))
    }
}

fn selector_matches(s: &Selector, f: &Fields) -> bool {
    let value: Option<&str> = match s.path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["name"] => Some(f.name),
        ["parent"] => Some(f.parent),
        ["kind"] => Some(f.kind),
        ["labels", key] => f.labels.get(key).map(String::as_str),
        _ => None,
    };
    match &s.op {
        Op::Present => value.is_some_and(|v| !v.is_empty()),
        Op::Equal(want) => value == Some(want.as_str()),
        Op::NotEqual(want) => value != Some(want.as_str()),
    }
}

/// A tiny cursor over one filter string.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn rest(&self) -> &str {
        &self.s[self.pos..]
    }
    fn skip_space(&mut self) {
        while self.rest().starts_with(' ') {
            self.pos += 1;
        }
    }
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }
    /// A bare word (stops at an operator, `,`, `.` when `dot_ends`, or a space) or a quoted
    /// string with `\"` and `\\` escapes.
    fn word(&mut self, dot_ends: bool) -> std::result::Result<String, String> {
        self.skip_space();
        if let Some(quoted) = self.rest().strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.pos += 1 + i + 1;
                        return Ok(out);
                    }
                    '\\' => match chars.next() {
                        Some((_, e)) => out.push(e),
                        None => break,
                    },
                    c => out.push(c),
                }
            }
            return Err(format!("unterminated quote at {}", self.pos));
        }
        let end = self
            .rest()
            .find(|c: char| {
                c == ',' || c == ' ' || c == '=' || c == '!' || c == '~' || (dot_ends && c == '.')
            })
            .unwrap_or(self.rest().len());
        if end == 0 {
            return Err(format!("expected a name or value at {}", self.pos));
        }
        let w = self.rest()[..end].to_string();
        self.pos += end;
        Ok(w)
    }
}

fn parse_one(s: &str) -> std::result::Result<Vec<Selector>, String> {
    let mut c = Cursor { s, pos: 0 };
    let mut out = Vec::new();
    loop {
        let mut path = vec![c.word(true)?];
        while c.eat(".") {
            path.push(c.word(true)?);
        }
        let op = if c.eat("==") {
            Op::Equal(c.word(false)?)
        } else if c.eat("!=") {
            Op::NotEqual(c.word(false)?)
        } else if c.eat("~=") {
            return Err("regular expressions (~=) are not supported".into());
        } else {
            Op::Present
        };
        out.push(Selector { path, op });
        c.skip_space();
        if c.rest().is_empty() {
            return Ok(out);
        }
        if !c.eat(",") {
            return Err(format!("unexpected {:?} at {}", c.rest(), c.pos));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(labels: &'a HashMap<String, String>) -> Fields<'a> {
        Fields {
            name: "default/3/sha256:abc",
            parent: "",
            kind: "committed",
            labels,
        }
    }

    fn f(list: &[&str]) -> Filters {
        Filters::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn selectors_and_or() {
        let labels = HashMap::from([("containerd.io/gc.root".to_string(), "x".to_string())]);
        let fl = fields(&labels);
        assert!(f(&[]).matches(&fl));
        assert!(f(&["kind==committed"]).matches(&fl));
        assert!(!f(&["kind==active"]).matches(&fl));
        assert!(f(&["kind==active", "kind==committed"]).matches(&fl));
        assert!(!f(&["kind==committed,parent"]).matches(&fl));
        assert!(f(&[r#"labels."containerd.io/gc.root""#]).matches(&fl));
        assert!(f(&[r#"labels."containerd.io/gc.root"==x,kind!=view"#]).matches(&fl));
        assert!(f(&[r#"name=="default/3/sha256:abc""#]).matches(&fl));
        assert!(!f(&["labels.other"]).matches(&fl));
    }

    #[test]
    fn bad_filters_are_errors_that_say_why() {
        for bad in ["kind~=comm.*", "kind==", "\"open", "kind==a b"] {
            let err = Filters::parse(&[bad.to_string()]).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }
}
