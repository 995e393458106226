//! Relative `/`-separated paths of the union, `""` being its root.

/// The directory holding `path` (`""` for a top-level name).
pub fn parent(path: &str) -> &str {
    split_name(path).0
}

/// `(directory, name)`.
pub fn split_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Proper ancestors of `path`, outermost first, root excluded.
pub fn ancestors(path: &str) -> Vec<&str> {
    path.match_indices('/').map(|(i, _)| &path[..i]).collect()
}

/// True when `inner` lies strictly below `outer`.
pub fn is_below(inner: &str, outer: &str) -> bool {
    if outer.is_empty() {
        return !inner.is_empty();
    }
    inner.len() > outer.len() && inner.starts_with(outer) && inner.as_bytes()[outer.len()] == b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_joins() {
        assert_eq!(split_name("a/b/c"), ("a/b", "c"));
        assert_eq!(split_name("a"), ("", "a"));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a/b");
        assert_eq!(ancestors("a/b/c"), ["a", "a/b"]);
        assert!(ancestors("a").is_empty());
        assert!(is_below("a/b", "a"));
        assert!(!is_below("ab", "a"));
        assert!(!is_below("a", "a"));
    }
}
