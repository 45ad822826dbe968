//! `${VAR}` and `${VAR:-default}` in a pipeline file's strings.
//!
//! Works on the text before TOML parsing, so line numbers in later errors stay
//! right, but only inside strings: comments and keys are left alone. A value
//! is escaped for the kind of string it lands in, so it can never change the
//! file's structure. `$${` writes a literal `${`.
//!
//! A string that is one whole `${...}` and nothing else is remembered
//! ([`Whole`]): where the typed parse wants a number or a boolean there,
//! [`retype`] writes the value bare instead (`interval_s = "${IVL:-30}"`).

use std::fmt;
use std::ops::Range;

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

/// A one-line string of the interpolated text that was one whole `${...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Whole {
    /// The string in the interpolated text, its quotes included.
    pub span: Range<usize>,
    /// What was written between `${` and `}`.
    pub expr: String,
    /// The value it gave, unescaped.
    pub value: String,
    /// Where the `${` was in the file.
    pub line: usize,
    pub column: usize,
}

/// The text with its variables substituted, and its [`Whole`] strings.
#[derive(Debug)]
pub struct Interpolated {
    pub text: String,
    pub whole: Vec<Whole>,
}

/// Substitutes variables using `lookup` (normally `std::env::var`).
pub fn interpolate(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, InterpolateError> {
    interpolate_marked(text, lookup).map(|i| i.text)
}

/// [`interpolate`], remembering the strings that were one whole `${...}`.
pub fn interpolate_marked(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    let mut whole = Vec::new();
    let mut ctx = Ctx::Code;
    // Where the current string's opening quote ends, in `text` and `out`.
    let (mut opened_at, mut opened_out) = (0, 0);
    let mut i = 0;
    let b = text.as_bytes();
    while i < b.len() {
        let rest = &text[i..];
        let (next_ctx, consumed) = step(ctx, rest);
        if consumed > 0 {
            out.push_str(&rest[..consumed]);
            if ctx == Ctx::Code && next_ctx != Ctx::Comment {
                (opened_at, opened_out) = (i + consumed, out.len());
            }
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
            let quote = match ctx {
                Ctx::Basic => Some('"'),
                Ctx::Literal => Some('\''),
                _ => None,
            };
            let alone = i == opened_at && quote.is_some_and(|q| rest[end + 1..].starts_with(q));
            out.push_str(&escape(&value, ctx).map_err(err)?);
            if alone {
                let span = opened_out - 1..out.len() + 1;
                whole.push(Whole { span, expr: rest[2..end].to_string(), value, line, column });
            }
            i += end + 1;
        } else {
            let ch = rest.chars().next().expect("non-empty");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    Ok(Interpolated { text: out, whole })
}

/// What the typed parse of `text` wanted where it found a string.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wanted {
    Integer,
    Float,
    Boolean,
}

/// After the typed parse of `text` failed with `message` on the value at
/// `span`: when that value is a [`Whole`] string where a number or boolean
/// is wanted, writes its value bare in `text` (`Ok(true)`, parse again), or
/// says that the value is not one. `Ok(false)`: the error is another one.
pub fn retype(
    text: &mut String,
    whole: &mut Vec<Whole>,
    span: Range<usize>,
    message: &str,
) -> Result<bool, InterpolateError> {
    let Some(at) = whole.iter().position(|w| w.span.start <= span.start && span.end <= w.span.end) else {
        return Ok(false);
    };
    let wanted = match message.strip_prefix("invalid type: string ").and_then(|m| m.rsplit_once(", expected ")) {
        Some((_, "a boolean")) => Wanted::Boolean,
        Some((_, "f32" | "f64")) => Wanted::Float,
        Some((
            _,
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128" | "isize",
        )) => Wanted::Integer,
        _ => return Ok(false),
    };
    let w = whole.remove(at);
    let bare = bare(&w.value, wanted).ok_or_else(|| {
        let value: String = w.value.chars().take(40).collect();
        let cut = if value.len() < w.value.len() { "..." } else { "" };
        let what = match wanted {
            Wanted::Integer => "a whole number",
            Wanted::Float => "a number",
            Wanted::Boolean => "`true` or `false`",
        };
        let message = format!("`${{{}}}` is \"{value}{cut}\", not {what}, which this key takes", w.expr);
        InterpolateError { line: w.line, column: w.column, message }
    })?;
    text.replace_range(w.span.clone(), &bare);
    let shift = |at: usize| at - w.span.len() + bare.len();
    for later in whole.iter_mut().filter(|l| l.span.start >= w.span.end) {
        later.span = shift(later.span.start)..shift(later.span.end);
    }
    Ok(true)
}

/// `value` as a bare TOML number or boolean, if it is one.
fn bare(value: &str, wanted: Wanted) -> Option<String> {
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    match wanted {
        Wanted::Boolean => matches!(value, "true" | "false").then(|| value.to_string()),
        Wanted::Integer => {
            let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
            if !digits(unsigned) {
                return None;
            }
            value.parse::<i128>().ok().map(|n| n.to_string())
        }
        Wanted::Float => {
            let plain = value.bytes().all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c));
            let n = value.parse::<f64>().ok().filter(|n| plain && n.is_finite())?;
            Some(format!("{n:?}"))
        }
    }
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
    fn strings_of_one_whole_variable_are_remembered() {
        let text = "a = \"${QUEUE}\"\nb = 'x${QUEUE}'\nc = '${QUEUE}'\nd = \"${QUEUE}y\"\n# \"${NOPE}\"\n";
        let got = interpolate_marked(text, env).unwrap();
        let found: Vec<(&str, usize, usize)> =
            got.whole.iter().map(|w| (&got.text[w.span.clone()], w.line, w.column)).collect();
        assert_eq!(found, [("\"logins\"", 1, 6), ("'logins'", 3, 6)]);
        assert_eq!(got.whole[0].expr, "QUEUE");
    }

    #[test]
    fn a_whole_variable_becomes_the_number_or_boolean_wanted() {
        let lookup = |n: &str| match n {
            "N" => Some("+030".to_string()),
            "B" => Some("true".to_string()),
            _ => None,
        };
        let Interpolated { mut text, mut whole } =
            interpolate_marked("n = \"${N}\"\nb = '${B}'\nf = \"${F:-2.5}\"\n", lookup).unwrap();
        let span_of = |text: &str, key: &str| {
            let start = text.find(key).unwrap() + key.len();
            start..start + text[start..].find('\n').unwrap()
        };
        let s = span_of(&text, "b = ");
        assert!(retype(&mut text, &mut whole, s, "invalid type: string \"true\", expected a boolean").unwrap());
        let s = span_of(&text, "n = ");
        assert!(retype(&mut text, &mut whole, s, "invalid type: string \"+030\", expected u64").unwrap());
        let s = span_of(&text, "f = ");
        assert!(
            !retype(&mut text, &mut whole, s.clone(), "invalid type: string \"2.5\", expected a sequence").unwrap()
        );
        assert!(retype(&mut text, &mut whole, s, "invalid type: string \"2.5\", expected f64").unwrap());
        assert_eq!(text, "n = 30\nb = true\nf = 2.5\n");
        assert!(whole.is_empty());
    }

    #[test]
    fn a_whole_variable_that_is_not_a_number_is_an_error_naming_it() {
        let Interpolated { mut text, mut whole } = interpolate_marked("\n  n = \"${IVL:-soon}\"", env).unwrap();
        let span = 7..13;
        let err = retype(&mut text, &mut whole, span, "invalid type: string \"soon\", expected u64").unwrap_err();
        assert_eq!(err.to_string(), "2:8: `${IVL:-soon}` is \"soon\", not a whole number, which this key takes");
        for (value, wanted) in [("1 ", Wanted::Integer), ("1_000", Wanted::Integer), ("0x1", Wanted::Integer)] {
            assert_eq!(bare(value, wanted), None, "{value}");
        }
        assert_eq!(bare("inf", Wanted::Float), None);
        assert_eq!(bare("True", Wanted::Boolean), None);
        assert_eq!(bare("-7", Wanted::Integer).as_deref(), Some("-7"));
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        assert_eq!(interpolate(r#"a = "x\"${QUEUE}""#, env).unwrap(), r#"a = "x\"logins""#);
    }
}
