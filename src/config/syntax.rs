//! TOML syntax and type errors: where in the file they are (line, column) and under which key
//! (`sip.trunk[1].pasword`), so `earshot check-config` points at the mistake.

use super::ConfigError;

/// Turns a TOML error into [`ConfigError::Syntax`], finding the key path at its position.
pub(super) fn syntax_error(input: &str, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map(|s| s.start).unwrap_or(0);
    let (line, column) = line_column(input, offset);
    ConfigError::Syntax {
        path: err.span().and_then(|span| key_path_at(input, span.start)),
        line,
        column,
        message: err.message().to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `input`.
fn line_column(input: &str, offset: usize) -> (usize, usize) {
    let before = input.get(..offset.min(input.len())).unwrap_or(input);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = before.matches('\n').count() + 1;
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The dotted path of the innermost key or value covering byte `offset`, if the document
/// parses as TOML (type errors happen after parsing, so they always get a path).
fn key_path_at(input: &str, offset: usize) -> Option<String> {
    let doc = toml::de::DeTable::parse(input).ok()?;
    let mut best: Option<(usize, String)> = None;
    search_table(doc.get_ref(), "", offset, &mut best);
    best.map(|(_, path)| path)
}

/// Depth-first search for the smallest key or value span covering `offset`.
fn search_table(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        consider(key.span(), &path, offset, best);
        search_value(value, &path, offset, best);
    }
}

/// [`search_table`] for one value: the value itself, then what it contains.
fn search_value(
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    path: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    consider(value.span(), path, offset, best);
    match value.get_ref() {
        toml::de::DeValue::Table(table) => search_table(table, path, offset, best),
        toml::de::DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                search_value(item, &format!("{path}[{i}]"), offset, best);
            }
        }
        _ => {}
    }
}

/// Records `path` as the best match if `span` covers `offset` and is the smallest so far.
fn consider(
    span: std::ops::Range<usize>,
    path: &str,
    offset: usize,
    best: &mut Option<(usize, String)>,
) {
    let len = span.end.saturating_sub(span.start);
    let covers = span.start <= offset && offset < span.start + len.max(1);
    if covers && best.as_ref().is_none_or(|(best_len, _)| len < *best_len) {
        *best = Some((len, path.to_owned()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use crate::config::{Config, ConfigError};

    #[test]
    fn unknown_key_is_rejected_with_its_path_and_line() {
        let err =
            Config::from_toml_str("[sip]\nlisten = \"0.0.0.0:5060\"\nlisen = \"x\"\n").unwrap_err();
        match &err {
            ConfigError::Syntax {
                path,
                line,
                message,
                ..
            } => {
                assert_eq!(path.as_deref(), Some("sip.lisen"));
                assert_eq!(*line, 3);
                assert!(message.contains("unknown field `lisen`"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert!(
            err.to_string().starts_with("sip.lisen: line 3, column 1: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_section_and_unknown_trunk_key_are_rejected() {
        let err = Config::from_toml_str("[sipp]\nlisten = \"x\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), .. } if p == "sipp"),
            "{err:?}"
        );
        let err = Config::from_toml_str(
            "[[sip.trunk]]\nname = \"a\"\n[[sip.trunk]]\nname = \"b\"\npasword = \"x\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), line: 5, .. } if p == "sip.trunk[1].pasword"),
            "{err:?}"
        );
    }

    #[test]
    fn type_error_reports_path_and_line() {
        let err = Config::from_toml_str("\n[calls]\nmax_concurrent = \"many\"\n").unwrap_err();
        match err {
            ConfigError::Syntax {
                path, line, column, ..
            } => {
                assert_eq!(path.as_deref(), Some("calls.max_concurrent"));
                assert_eq!((line, column), (3, 18));
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        let err = Config::from_toml_str("[sip]\nallow = [\"::1\", 5]\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { path: Some(p), .. } if p == "sip.allow[1]"),
            "{err:?}"
        );
    }

    #[test]
    fn toml_syntax_error_reports_line() {
        let err = Config::from_toml_str("[sip]\nlisten = \n").unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }
}
