//! List values: a TOML array in a file, a comma-separated string in an
//! environment variable or flag (`turn:a:3478,turns:b:5349`). Both arrive
//! here through the `config` crate; this file only turns either shape into
//! a `Vec<String>`.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};

/// Deserializes a list of strings from an array or a comma-separated
/// string; items are trimmed and empty ones dropped (so `""` is an empty list).
pub fn string_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_any(ListVisitor)
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings or a comma-separated string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Vec<String>, E> {
        Ok(split(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            let item = item.trim();
            if !item.is_empty() {
                out.push(item.to_owned());
            }
        }
        Ok(out)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
        Ok(Vec::new())
    }
}

fn split(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "string_list")]
        urls: Vec<String>,
    }

    #[test]
    fn arrays_and_comma_separated_strings_give_the_same_list() {
        let a: Holder = toml::from_str(r#"urls = ["turn:a:3478", " turns:b:5349 "]"#).unwrap();
        let b: Holder = toml::from_str(r#"urls = "turn:a:3478, turns:b:5349,""#).unwrap();
        assert_eq!(a.urls, ["turn:a:3478", "turns:b:5349"]);
        assert_eq!(a.urls, b.urls);
        let empty: Holder = toml::from_str(r#"urls = """#).unwrap();
        assert!(empty.urls.is_empty());
        assert!(toml::from_str::<Holder>("urls = 5").is_err());
    }
}
