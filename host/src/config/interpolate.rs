//! `${VAR}` and `${VAR:-default}` in a pipeline file's strings.
//!
//! Works on the text before TOML parsing, so line numbers in later errors stay
//! right, but only inside strings: comments and keys are left alone. A value
//! is escaped for the kind of string it lands in, so it can never change the
//! file's structure. `$${` writes a literal `${`.

use std::fmt;

/// A variable that could not be substituted.
#[derive(Debug, PartialEq)]
pub struct InterpolateError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Ctx {
    Code,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Substitutes variables using `lookup` (normally `std::env::var`).
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut ctx = Ctx::Code;
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        let rest = &text[i..];
        let (next_ctx, consumed) = step(ctx, rest);
        if consumed > 0 {
            out.push_str(&rest[..consumed]);
            ctx = next_ctx;
            i += consumed;
            continue;
        }
        let in_string = !matches!(ctx, Ctx::Code | Ctx::Comment);
        if in_string && rest.starts_with("$${") {
            out.push_str("${");
            i += 3;
        } else if in_string && rest.starts_with("${") {
            let (line, column) = position(text, i);
            let err = |message: String| InterpolateError { line, column, message };
            let end = rest.find('}').ok_or_else(|| err("`${` without a closing `}`".into()))?;
            let value = resolve(&rest[2..end], &lookup).map_err(err)?;
            out.push_str(&escape(&value, ctx).map_err(err)?);
            i += end + 1;
        } else {
            let ch = rest.chars().next().expect("non-empty");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    Ok(out)
}

/// Context switches at the start of `rest`: the new context and how many
/// bytes of delimiter (or escape) to copy through.
fn step(ctx: Ctx, rest: &str) -> (Ctx, usize) {
    match ctx {
        Ctx::Code if rest.starts_with('#') => (Ctx::Comment, 1),
        Ctx::Code if rest.starts_with("\"\"\"") => (Ctx::MultiBasic, 3),
        Ctx::Code if rest.starts_with('"') => (Ctx::Basic, 1),
        Ctx::Code if rest.starts_with("'''") => (Ctx::MultiLiteral, 3),
        Ctx::Code if rest.starts_with('\'') => (Ctx::Literal, 1),
        Ctx::Comment if rest.starts_with('\n') => (Ctx::Code, 1),
        Ctx::Basic | Ctx::MultiBasic if rest.starts_with('\\') => {
            (ctx, rest.chars().nth(1).map_or(1, |c| 1 + c.len_utf8()))
        }
        Ctx::Basic if rest.starts_with('"') || rest.starts_with('\n') => (Ctx::Code, 1),
        Ctx::MultiBasic if rest.starts_with("\"\"\"") => (Ctx::Code, 3),
        Ctx::Literal if rest.starts_with('\'') || rest.starts_with('\n') => (Ctx::Code, 1),
        Ctx::MultiLiteral if rest.starts_with("'''") => (Ctx::Code, 3),
        _ => (ctx, 0),
    }
}

fn resolve(expr: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (expr, None),
    };
    let valid = !name.is_empty()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(format!("`${{{expr}}}`: `{name}` is not a valid variable name"));
    }
    match (lookup(name), default) {
        (Some(v), Some(d)) if v.is_empty() => Ok(d.to_string()),
        (Some(v), _) => Ok(v),
        (None, Some(d)) => Ok(d.to_string()),
        (None, None) => {
            Err(format!("environment variable `{name}` is not set (write `${{{name}:-default}}` for a default)"))
        }
    }
}

fn escape(value: &str, ctx: Ctx) -> Result<String, String> {
    match ctx {
        Ctx::Basic | Ctx::MultiBasic => {
            let mut s = String::with_capacity(value.len());
            for c in value.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\r' => s.push_str("\\r"),
                    '\t' => s.push_str("\\t"),
                    c if c.is_control() => s.push_str(&format!("\\u{:04X}", c as u32)),
                    c => s.push(c),
                }
            }
            Ok(s)
        }
        _ if value.contains(['\'', '\n', '\r']) => {
            Err("a value with quotes or newlines cannot go into a 'literal' string; use \"double quotes\"".into())
        }
        _ => Ok(value.to_string()),
    }
}

/// 1-based line and column of byte `at`.
pub fn position(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "QUEUE" => Some("logins".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a\"b\\c\nd".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_in_strings_only() {
        let text = "# ${NOPE} in a comment\nqueue = \"${QUEUE}\" # ${NOPE}\nlit = '${QUEUE}'\n";
        let want = "# ${NOPE} in a comment\nqueue = \"logins\" # ${NOPE}\nlit = 'logins'\n";
        assert_eq!(interpolate(text, env).unwrap(), want);
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(interpolate("a = \"${X:-dflt}\"", env).unwrap(), "a = \"dflt\"");
        assert_eq!(interpolate("a = \"${EMPTY:-dflt}\"", env).unwrap(), "a = \"dflt\"");
        assert_eq!(interpolate("a = \"${QUEUE:-dflt}\"", env).unwrap(), "a = \"logins\"");
        assert_eq!(interpolate("a = \"$${QUEUE}\"", env).unwrap(), "a = \"${QUEUE}\"");
    }

    #[test]
    fn values_are_escaped_for_their_string() {
        assert_eq!(interpolate("a = \"${TRICKY}\"", env).unwrap(), "a = \"a\\\"b\\\\c\\nd\"");
        let err = interpolate("\na = '${TRICKY}'", env).unwrap_err();
        assert_eq!((err.line, err.column), (2, 6));
    }

    #[test]
    fn unset_variables_are_errors_with_their_position() {
        let err = interpolate("x = 1\nq = \"pre-${MISSING}\"\n", env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "2:10: environment variable `MISSING` is not set (write `${MISSING:-default}` for a default)"
        );
        let err = interpolate("q = \"${1BAD}\"", env).unwrap_err();
        assert_eq!(err.message, "`${1BAD}`: `1BAD` is not a valid variable name");
        assert!(interpolate("q = \"${OPEN\"", env).is_err());
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        assert_eq!(interpolate(r#"a = "x\"${QUEUE}""#, env).unwrap(), r#"a = "x\"logins""#);
    }
}
