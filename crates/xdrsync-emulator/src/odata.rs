//! The OData subset the Defender and Graph list APIs accept.
//!
//! `$filter` is a conjunction of comparisons (`eq ne gt ge lt le`, joined by `and`, optionally
//! parenthesised) between a filterable property and a literal: a single-quoted string, an
//! unquoted ISO 8601 date-time, a number, `null`, `true` or `false`. Anything else — another
//! property, `or`, functions, a string compared with a date — is refused with a message, as the
//! real services refuse it with 400.

use xdrsync_model::Timestamp;

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `eq`
    Eq,
    /// `ne`
    Ne,
    /// `gt`
    Gt,
    /// `ge`
    Ge,
    /// `lt`
    Lt,
    /// `le`
    Le,
}

/// A literal value.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `'text'`
    Str(String),
    /// `2020-06-03T18:04:29.4633333Z`
    DateTime(Timestamp),
    /// `42`
    Number(f64),
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
}

/// One `property op literal` clause.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The property as written.
    pub property: String,
    /// The operator.
    pub op: Op,
    /// The literal.
    pub value: Literal,
}

/// The type of a filterable property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropType {
    /// `Edm.DateTimeOffset`
    DateTime,
    /// `Edm.String` or an enum.
    Text,
}

/// A property value of an entity being filtered.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    /// A time.
    DateTime(Timestamp),
    /// Text, or absent.
    Text(Option<&'a str>),
}

/// Parses a `$filter` expression against the given filterable properties.
pub fn parse_filter(input: &str, props: &[(&str, PropType)]) -> Result<Vec<Comparison>, String> {
    let tokens = tokenize(input)?;
    let mut out = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    let mut expect_clause = true;
    while let Some(tok) = tokens.get(i) {
        match (tok, expect_clause) {
            (Tok::Open, true) => {
                depth += 1;
                i += 1;
            }
            (Tok::Close, false) if depth > 0 => {
                depth -= 1;
                i += 1;
            }
            (Tok::Word(w), false) if w.eq_ignore_ascii_case("and") => {
                expect_clause = true;
                i += 1;
            }
            (Tok::Word(w), false) if w.eq_ignore_ascii_case("or") => {
                return Err("the 'or' operator is not supported in this query".into());
            }
            (Tok::Word(prop), true) => {
                let Some((name, ty)) = props.iter().find(|(p, _)| p == prop) else {
                    if tokens.get(i + 1) == Some(&Tok::Open) {
                        return Err(format!("unknown function '{prop}'"));
                    }
                    return Err(format!(
                        "Could not find a property named '{prop}' that can be used in a filter; filterable properties are: {}",
                        props.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
                    ));
                };
                let op = match tokens.get(i + 1) {
                    Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        other => {
                            return Err(format!("unsupported operator '{other}' after '{name}'"));
                        }
                    },
                    _ => return Err(format!("expected an operator after '{name}'")),
                };
                let value = match tokens.get(i + 2) {
                    Some(Tok::Lit(l)) => l.clone(),
                    Some(Tok::Word(w)) => word_literal(w)?,
                    _ => return Err(format!("expected a value after '{name}'")),
                };
                match (ty, &value) {
                    (PropType::DateTime, Literal::DateTime(_)) => {}
                    (PropType::DateTime, other) => {
                        return Err(format!(
                            "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and '{}' for '{name}'",
                            lit_type(other)
                        ));
                    }
                    (PropType::Text, Literal::Str(_) | Literal::Null) => {}
                    (PropType::Text, other) => {
                        return Err(format!(
                            "A binary operator with incompatible types was detected. Found operand types 'Edm.String' and '{}' for '{name}'",
                            lit_type(other)
                        ));
                    }
                }
                out.push(Comparison {
                    property: (*name).to_owned(),
                    op,
                    value,
                });
                expect_clause = false;
                i += 3;
            }
            (t, _) => return Err(format!("syntax error at {t:?}")),
        }
    }
    if expect_clause && !tokens.is_empty() {
        return Err("the filter ends where a clause was expected".into());
    }
    if depth != 0 {
        return Err("unbalanced parentheses".into());
    }
    Ok(out)
}

fn lit_type(l: &Literal) -> &'static str {
    match l {
        Literal::Str(_) => "Edm.String",
        Literal::DateTime(_) => "Edm.DateTimeOffset",
        Literal::Number(_) => "Edm.Int32",
        Literal::Null => "null",
        Literal::Bool(_) => "Edm.Boolean",
    }
}

fn word_literal(w: &str) -> Result<Literal, String> {
    match w {
        "null" => return Ok(Literal::Null),
        "true" => return Ok(Literal::Bool(true)),
        "false" => return Ok(Literal::Bool(false)),
        _ => {}
    }
    if w.starts_with(|c: char| c.is_ascii_digit()) {
        if w.contains('T') || w.contains('-') {
            return w
                .parse::<Timestamp>()
                .map(Literal::DateTime)
                .map_err(|_| format!("The DateTimeOffset text '{w}' should be in format 'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?'"));
        }
        return w
            .parse::<f64>()
            .map(Literal::Number)
            .map_err(|_| format!("bad number '{w}'"));
    }
    Err(format!("unexpected '{w}' where a value was expected"))
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Lit(Literal),
    Open,
    Close,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if c == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        text.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        text.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Lit(Literal::Str(text)));
        } else {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| !c.is_whitespace() && *c != '(' && *c != ')')
            {
                i += 1;
            }
            out.push(Tok::Word(
                chars.get(start..i).unwrap_or_default().iter().collect(),
            ));
        }
    }
    Ok(out)
}

/// The time range a filter allows for `property` (a superset: inclusive at both ends), so a
/// list can read only that range of its index and let [`matches`] decide the rest.
pub fn time_range(filter: &[Comparison], property: &str) -> (Option<Timestamp>, Option<Timestamp>) {
    let (mut lower, mut upper) = (None::<Timestamp>, None::<Timestamp>);
    for c in filter
        .iter()
        .filter(|c| c.property.eq_ignore_ascii_case(property))
    {
        let Literal::DateTime(t) = c.value else {
            continue;
        };
        if matches!(c.op, Op::Ge | Op::Gt | Op::Eq) {
            lower = Some(lower.map_or(t, |l| l.max(t)));
        }
        if matches!(c.op, Op::Le | Op::Lt | Op::Eq) {
            upper = Some(upper.map_or(t, |u| u.min(t)));
        }
    }
    (lower, upper)
}

/// Whether an entity satisfies every comparison; `get` returns the value of a property.
pub fn matches<'a>(filter: &[Comparison], get: impl Fn(&str) -> Value<'a>) -> bool {
    filter.iter().all(|c| {
        let ord = match (get(&c.property), &c.value) {
            (Value::DateTime(v), Literal::DateTime(l)) => Some(v.cmp(l)),
            (Value::Text(Some(v)), Literal::Str(l)) => {
                Some(v.to_ascii_lowercase().cmp(&l.to_ascii_lowercase()))
            }
            (Value::Text(None), Literal::Null) => Some(std::cmp::Ordering::Equal),
            (Value::Text(Some(_)), Literal::Null) | (Value::Text(None), Literal::Str(_)) => None,
            _ => None,
        };
        use std::cmp::Ordering::*;
        match (c.op, ord) {
            (Op::Eq, Some(o)) => o == Equal,
            (Op::Ne, Some(o)) => o != Equal,
            (Op::Ne, None) => true,
            (Op::Gt, Some(o)) => o == Greater,
            (Op::Ge, Some(o)) => o != Less,
            (Op::Lt, Some(o)) => o == Less,
            (Op::Le, Some(o)) => o != Greater,
            (_, None) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROPS: &[(&str, PropType)] = &[
        ("lastUpdateTime", PropType::DateTime),
        ("createdTime", PropType::DateTime),
        ("status", PropType::Text),
        ("assignedTo", PropType::Text),
    ];

    #[test]
    fn documented_forms_parse() {
        let f = parse_filter("lastUpdateTime ge 2020-06-03T18:04:29.4633333Z", PROPS).unwrap();
        assert_eq!(f.len(), 1);
        let f = parse_filter(
            "(status eq 'Active') and createdTime gt 2021-01-01T00:00:00Z and assignedTo eq 'o''brien@x'",
            PROPS,
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[2].value, Literal::Str("o'brien@x".into()));
    }

    #[test]
    fn outside_the_subset_is_refused_with_a_reason() {
        for (bad, why) in [
            (
                "severity eq 'High'",
                "Could not find a property named 'severity'",
            ),
            ("status eq 'Active' or status eq 'Resolved'", "'or'"),
            (
                "lastUpdateTime ge '2020-01-01T00:00:00Z'",
                "incompatible types",
            ),
            ("lastUpdateTime ge", "expected a value"),
            ("status eq 'Active' and", "ends where a clause"),
            ("contains(status,'A')", "unknown function"),
            ("status eq 'x", "unterminated"),
            ("lastUpdateTime ge 2020-13-45T00:00:00Z", "DateTimeOffset"),
        ] {
            let err = parse_filter(bad, PROPS).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn evaluation() {
        let f = parse_filter(
            "lastUpdateTime ge 2020-01-01T00:00:00Z and status eq 'active'",
            PROPS,
        )
        .unwrap();
        let t: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        let get = |status: &'static str| {
            move |p: &str| match p {
                "lastUpdateTime" => Value::DateTime(t),
                _ => Value::Text(Some(status)),
            }
        };
        assert!(matches(&f, get("Active")));
        assert!(!matches(&f, get("Resolved")));
    }

    /// Property test: any sequence of the grammar's tokens (and any text at all) parses or is
    /// refused with Graph's message — never a panic.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const TOKENS: &[&str] = &[
            "lastUpdateTime",
            "createdTime",
            "status",
            "assignedTo",
            "severity",
            "eq",
            "ne",
            "gt",
            "ge",
            "lt",
            "le",
            "and",
            "or",
            "not",
            "in",
            "(",
            ")",
            "'Active'",
            "'o''b'",
            "'",
            "null",
            "true",
            "2020-06-03T18:04:29.4633333Z",
            "2020-13-45T00:00:00Z",
            "12",
            "contains(",
            ",",
            "'",
            "\u{2028}",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

            #[test]
            fn any_token_soup_parses_or_is_refused(
                words in proptest::collection::vec(proptest::sample::select(TOKENS), 0..16)
            ) {
                let _ = parse_filter(&words.join(" "), PROPS);
                let _ = parse_filter(&words.concat(), PROPS);
            }

            #[test]
            fn any_text_parses_or_is_refused(text in ".{0,120}") {
                let _ = parse_filter(&text, PROPS);
            }
        }
    }
}
