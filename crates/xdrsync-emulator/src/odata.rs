//! The OData subset the Defender and Graph list APIs accept.
//!
//! `$filter` is comparisons (`eq ne gt ge lt le`) between a filterable property and a literal
//! (a single-quoted string, an unquoted ISO 8601 date-time, a number, `null`, `true`,
//! `false`), joined by `and`, parenthesised at will. Graph also takes `or`, `not` and
//! `property in ('a','b')` ([`Dialect::Graph`]); the legacy APIs document only `and`
//! ([`Dialect::Legacy`]). Anything else — another property, functions, a string compared with
//! a date, an enum literal that is no member — is refused with a message, as the real services
//! refuse it with 400.
//!
//! Enum properties compare by member order, as OData compares enums by their underlying
//! values: `severity ge 'medium'` is medium and high, never `unknown` (docs/emulator.md).

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
    /// The members of the property's enum type, in order (`None`: not an enum).
    pub members: Option<&'static [&'static str]>,
}

/// A parsed `$filter`.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// No filter: everything matches.
    All,
    /// `property op literal`.
    Cmp(Comparison),
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
}

/// Which grammar a service accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// Microsoft Graph: `and`, `or`, `not`, `in`, parentheses.
    Graph,
    /// The legacy XDR and MDE APIs: `and` and parentheses.
    Legacy,
}

/// The type of a filterable property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropType {
    /// `Edm.DateTimeOffset`
    DateTime,
    /// `Edm.String` (or a legacy enum the service treats as text).
    Text,
    /// A Graph enum type: its members in declaration order.
    Enum(&'static [&'static str]),
    /// `Edm.Int64` (`investigationId`).
    Long,
}

/// A property value of an entity being filtered.
#[derive(Clone, Debug)]
pub enum Value<'a> {
    /// A time.
    DateTime(Timestamp),
    /// Text (or an enum member), or absent.
    Text(Option<&'a str>),
    /// A number, or absent.
    Number(Option<i64>),
}

/// How deep parentheses and `not` may nest: a hostile filter of ten thousand `(` is a clear
/// 400, not a stack overflow.
const MAX_DEPTH: usize = 32;
/// How many values `in (…)` may list.
const MAX_IN: usize = 100;

/// Parses a `$filter` expression against the given filterable properties.
pub fn parse_filter(
    input: &str,
    props: &[(&str, PropType)],
    dialect: Dialect,
) -> Result<Filter, String> {
    let tokens = tokenize(input)?;
    if tokens.is_empty() {
        return Ok(Filter::All);
    }
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        props,
        dialect,
    };
    let f = p.or(0)?;
    match p.tokens.get(p.at) {
        None => Ok(f),
        Some(Tok::Close) => Err("unbalanced parentheses".into()),
        Some(Tok::Word(w)) if w.eq_ignore_ascii_case("or") => {
            Err("the 'or' operator is not supported in this query".into())
        }
        Some(t) => Err(format!("syntax error at {t:?}")),
    }
}

struct Parser<'t, 'p> {
    tokens: &'t [Tok],
    at: usize,
    props: &'p [(&'p str, PropType)],
    dialect: Dialect,
}

impl Parser<'_, '_> {
    fn peek_word(&self, word: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(word))
    }

    fn or(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.and(depth)?;
        while self.dialect == Dialect::Graph && self.peek_word("or") {
            self.at += 1;
            let right = self.and(depth)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Filter, String> {
        let mut left = self.unary(depth)?;
        while self.peek_word("and") {
            self.at += 1;
            let right = self.unary(depth)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, depth: usize) -> Result<Filter, String> {
        if depth >= MAX_DEPTH {
            return Err(format!("the filter nests deeper than {MAX_DEPTH} levels"));
        }
        match self.tokens.get(self.at) {
            None => Err("the filter ends where a clause was expected".into()),
            Some(Tok::Open) => {
                self.at += 1;
                let inner = self.or(depth + 1)?;
                match self.tokens.get(self.at) {
                    Some(Tok::Close) => {
                        self.at += 1;
                        Ok(inner)
                    }
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("or") => {
                        Err("the 'or' operator is not supported in this query".into())
                    }
                    _ => Err("unbalanced parentheses".into()),
                }
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("not") => {
                if self.dialect != Dialect::Graph {
                    return Err("the 'not' operator is not supported in this query".into());
                }
                self.at += 1;
                Ok(Filter::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(Tok::Word(_)) => self.clause(),
            Some(t) => Err(format!("syntax error at {t:?}")),
        }
    }

    fn literal(&mut self, name: &str) -> Result<Literal, String> {
        let value = match self.tokens.get(self.at) {
            Some(Tok::Lit(l)) => l.clone(),
            Some(Tok::Word(w)) => word_literal(w)?,
            _ => return Err(format!("expected a value after '{name}'")),
        };
        self.at += 1;
        Ok(value)
    }

    fn clause(&mut self) -> Result<Filter, String> {
        let Some(Tok::Word(prop)) = self.tokens.get(self.at) else {
            return Err("expected a property".into());
        };
        // Property names are matched without regard to case, as the services do (the MDE
        // documentation itself writes `InvestigationId`).
        let Some((name, ty)) = self
            .props
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(prop))
        else {
            if self.tokens.get(self.at + 1) == Some(&Tok::Open) {
                return Err(format!("unknown function '{prop}'"));
            }
            return Err(format!(
                "Could not find a property named '{prop}' that can be used in a filter; filterable properties are: {}",
                self.props
                    .iter()
                    .map(|(p, _)| *p)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let (name, ty) = (*name, *ty);
        self.at += 1;
        let op = match self.tokens.get(self.at) {
            Some(Tok::Word(w)) => match w.to_ascii_lowercase().as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "lt" => Op::Lt,
                "le" => Op::Le,
                "in" if self.dialect == Dialect::Graph => {
                    self.at += 1;
                    return self.in_list(name, ty);
                }
                other => return Err(format!("unsupported operator '{other}' after '{name}'")),
            },
            _ => return Err(format!("expected an operator after '{name}'")),
        };
        self.at += 1;
        let value = self.literal(name)?;
        Ok(Filter::Cmp(comparison(name, ty, op, value)?))
    }

    /// `property in ('a', 'b')`: the same as `property eq 'a' or property eq 'b'`.
    fn in_list(&mut self, name: &str, ty: PropType) -> Result<Filter, String> {
        if self.tokens.get(self.at) != Some(&Tok::Open) {
            return Err(format!("expected '(' after '{name} in'"));
        }
        self.at += 1;
        let mut out: Option<Filter> = None;
        let mut n = 0;
        loop {
            let value = self.literal(name)?;
            n += 1;
            if n > MAX_IN {
                return Err(format!("'{name} in' lists more than {MAX_IN} values"));
            }
            let c = Filter::Cmp(comparison(name, ty, Op::Eq, value)?);
            out = Some(match out {
                None => c,
                Some(prev) => Filter::Or(Box::new(prev), Box::new(c)),
            });
            match self.tokens.get(self.at) {
                Some(Tok::Comma) => self.at += 1,
                Some(Tok::Close) => {
                    self.at += 1;
                    break;
                }
                _ => return Err(format!("expected ',' or ')' in the values of '{name} in'")),
            }
        }
        out.ok_or_else(|| format!("'{name} in' needs at least one value"))
    }
}

/// Checks the literal against the property's type.
fn comparison(name: &str, ty: PropType, op: Op, value: Literal) -> Result<Comparison, String> {
    let members = match (ty, &value) {
        (PropType::DateTime, Literal::DateTime(_)) => None,
        (PropType::DateTime, other) => {
            return Err(format!(
                "A binary operator with incompatible types was detected. Found operand types 'Edm.DateTimeOffset' and '{}' for '{name}'",
                lit_type(other)
            ));
        }
        (PropType::Text, Literal::Str(_) | Literal::Null) => None,
        (PropType::Enum(members), Literal::Str(s)) => {
            if !members.iter().any(|m| m.eq_ignore_ascii_case(s)) {
                return Err(format!(
                    "The string '{s}' is not a valid enumeration type constant for '{name}'."
                ));
            }
            Some(members)
        }
        (PropType::Enum(members), Literal::Null) => Some(members),
        (PropType::Long, Literal::Number(n)) if n.fract() == 0.0 => None,
        (PropType::Long, Literal::Null) => None,
        (PropType::Long, other) => {
            return Err(format!(
                "A binary operator with incompatible types was detected. Found operand types 'Edm.Int64' and '{}' for '{name}'",
                lit_type(other)
            ));
        }
        (PropType::Text | PropType::Enum(_), other) => {
            return Err(format!(
                "A binary operator with incompatible types was detected. Found operand types 'Edm.String' and '{}' for '{name}'",
                lit_type(other)
            ));
        }
    };
    Ok(Comparison {
        property: name.to_owned(),
        op,
        value,
        members,
    })
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
    Comma,
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
        } else if c == ',' {
            out.push(Tok::Comma);
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
                .is_some_and(|c| !c.is_whitespace() && !matches!(c, '(' | ')' | ','))
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
/// list can read only that range of its index and let [`matches`] decide the rest. Only the
/// top-level conjunction narrows it; what sits under `or` or `not` is left to [`matches`].
pub fn time_range(filter: &Filter, property: &str) -> (Option<Timestamp>, Option<Timestamp>) {
    let (mut lower, mut upper) = (None::<Timestamp>, None::<Timestamp>);
    let mut todo = vec![filter];
    while let Some(f) = todo.pop() {
        match f {
            Filter::And(a, b) => {
                todo.push(a);
                todo.push(b);
            }
            Filter::Cmp(c) if c.property.eq_ignore_ascii_case(property) => {
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
            _ => {}
        }
    }
    (lower, upper)
}

/// Whether an entity satisfies the filter; `get` returns the value of a property.
pub fn matches<'a>(filter: &Filter, get: &impl Fn(&str) -> Value<'a>) -> bool {
    match filter {
        Filter::All => true,
        Filter::Cmp(c) => compare(c, get),
        Filter::And(a, b) => matches(a, get) && matches(b, get),
        Filter::Or(a, b) => matches(a, get) || matches(b, get),
        Filter::Not(f) => !matches(f, get),
    }
}

fn compare<'a>(c: &Comparison, get: &impl Fn(&str) -> Value<'a>) -> bool {
    let rank = |members: &[&str], v: &str| members.iter().position(|m| m.eq_ignore_ascii_case(v));
    let ord = match (get(&c.property), &c.value) {
        (Value::DateTime(v), Literal::DateTime(l)) => Some(v.cmp(l)),
        (Value::Text(Some(v)), Literal::Str(l)) => match c.members {
            // Enums compare by member order; a value the type does not know is no match.
            Some(members) => match (rank(members, v), rank(members, l)) {
                (Some(a), Some(b)) => Some(a.cmp(&b)),
                _ => None,
            },
            None => Some(v.to_ascii_lowercase().cmp(&l.to_ascii_lowercase())),
        },
        (Value::Number(Some(v)), Literal::Number(l)) => (v as f64).partial_cmp(l),
        (Value::Number(None), Literal::Null) => Some(std::cmp::Ordering::Equal),
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
}

/// A parsed `$select`: the structural properties to keep. `id` always stays, as do
/// annotations (`@odata.type`) and an expanded navigation property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select(Vec<&'static str>);

/// Parses `$select=a,b` against the properties of `type_name`; an unknown name is Graph's 400.
pub fn parse_select(
    text: &str,
    properties: &[&'static str],
    type_name: &str,
) -> Result<Select, String> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err("Syntax error: '$select' lists an empty property.".into());
        }
        if name == "*" {
            return Ok(Select(properties.to_vec()));
        }
        let Some(p) = properties.iter().find(|p| p.eq_ignore_ascii_case(name)) else {
            return Err(format!(
                "Could not find a property named '{name}' on type '{type_name}'."
            ));
        };
        if !out.contains(p) {
            out.push(*p);
        }
    }
    Ok(Select(out))
}

impl Select {
    /// Keeps only the selected properties of `entity` (plus `id`, annotations and `keep`).
    pub fn project(&self, entity: &mut serde_json::Value, keep: Option<&str>) {
        if let Some(o) = entity.as_object_mut() {
            o.retain(|k, _| {
                k == "id"
                    || k.starts_with('@')
                    || keep == Some(k.as_str())
                    || self.0.iter().any(|p| p == k)
            });
        }
    }

    /// The properties, for the `@odata.context` URL (`(displayName,id)`).
    pub fn names(&self) -> Vec<&'static str> {
        let mut v = self.0.clone();
        if !v.contains(&"id") {
            v.push("id");
        }
        v
    }
}

/// `$expand` of a navigation property, optionally with a nested `$select`:
/// `alerts` or `alerts($select=id,title)`. `None` when `text` names another property.
pub fn parse_expand(
    text: &str,
    navigation: &str,
    nested: &[&'static str],
    nested_type: &str,
) -> Result<Option<Option<Select>>, String> {
    let text = text.trim();
    let (name, options) = match text.split_once('(') {
        None => (text, None),
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(options) => (name.trim(), Some(options)),
            None => {
                return Err(format!(
                    "Syntax error in '$expand={text}': unbalanced parentheses."
                ));
            }
        },
    };
    if !name.eq_ignore_ascii_case(navigation) {
        return Ok(None);
    }
    let Some(options) = options else {
        return Ok(Some(None));
    };
    let mut select = None;
    for option in options.split(';').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("$select") => {
                select = Some(parse_select(v, nested, nested_type)?);
            }
            _ => {
                return Err(format!(
                    "The query option '{option}' is not supported inside '$expand={navigation}(…)'."
                ));
            }
        }
    }
    Ok(Some(select))
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
    const SEVERITY: &[&str] = &[
        "unknown",
        "informational",
        "low",
        "medium",
        "high",
        "unknownFutureValue",
    ];
    const GRAPH: &[(&str, PropType)] = &[
        ("lastUpdateDateTime", PropType::DateTime),
        ("severity", PropType::Enum(SEVERITY)),
        ("assignedTo", PropType::Text),
    ];

    fn cmps(f: &Filter) -> Vec<&Comparison> {
        match f {
            Filter::All => Vec::new(),
            Filter::Cmp(c) => vec![c],
            Filter::And(a, b) | Filter::Or(a, b) => {
                let mut v = cmps(a);
                v.extend(cmps(b));
                v
            }
            Filter::Not(f) => cmps(f),
        }
    }

    #[test]
    fn documented_forms_parse() {
        let f = parse_filter(
            "lastUpdateTime ge 2020-06-03T18:04:29.4633333Z",
            PROPS,
            Dialect::Legacy,
        )
        .unwrap();
        assert_eq!(cmps(&f).len(), 1);
        let f = parse_filter(
            "(status eq 'Active') and createdTime gt 2021-01-01T00:00:00Z and assignedTo eq 'o''brien@x'",
            PROPS,
            Dialect::Legacy,
        )
        .unwrap();
        let c = cmps(&f);
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].value, Literal::Str("o'brien@x".into()));
        assert_eq!(parse_filter("  ", PROPS, Dialect::Legacy), Ok(Filter::All));
    }

    #[test]
    fn outside_the_subset_is_refused_with_a_reason() {
        for (bad, why) in [
            (
                "severity eq 'High'",
                "Could not find a property named 'severity'",
            ),
            ("status eq 'Active' or status eq 'Resolved'", "'or'"),
            ("(status eq 'Active' or status eq 'Resolved')", "'or'"),
            ("not status eq 'Active'", "'not'"),
            ("status in ('Active')", "unsupported operator 'in'"),
            (
                "lastUpdateTime ge '2020-01-01T00:00:00Z'",
                "incompatible types",
            ),
            ("lastUpdateTime ge", "expected a value"),
            ("status eq 'Active' and", "ends where a clause"),
            ("contains(status,'A')", "unknown function"),
            ("status eq 'x", "unterminated"),
            ("lastUpdateTime ge 2020-13-45T00:00:00Z", "DateTimeOffset"),
            ("(status eq 'Active'", "unbalanced"),
            ("status eq 'Active')", "unbalanced"),
        ] {
            let err = parse_filter(bad, PROPS, Dialect::Legacy).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for (bad, why) in [
            ("severity eq 'severe'", "not a valid enumeration"),
            ("severity in ('high',)", "expected a value"),
            ("severity in 'high'", "expected '('"),
            ("severity in ('high' 'low')", "expected ','"),
            ("severity eq 3", "incompatible types"),
            (&"(".repeat(10_000), "nests deeper"),
            (&"not ".repeat(10_000), "nests deeper"),
        ] {
            let err = parse_filter(bad, GRAPH, Dialect::Graph).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn evaluation() {
        let f = parse_filter(
            "lastUpdateTime ge 2020-01-01T00:00:00Z and status eq 'active'",
            PROPS,
            Dialect::Legacy,
        )
        .unwrap();
        let t: Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        let get = |status: &'static str| {
            move |p: &str| match p {
                "lastUpdateTime" => Value::DateTime(t),
                _ => Value::Text(Some(status)),
            }
        };
        assert!(matches(&f, &get("Active")));
        assert!(!matches(&f, &get("Resolved")));
    }

    /// `or`, `not`, `in` and parentheses bind as OData says (`and` before `or`), and enums
    /// compare by member order, not alphabetically.
    #[test]
    fn graph_logic_and_enum_order() {
        let t: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let entity = |sev: &'static str, who: Option<&'static str>| {
            move |p: &str| match p {
                "lastUpdateDateTime" => Value::DateTime(t),
                "severity" => Value::Text(Some(sev)),
                _ => Value::Text(who),
            }
        };
        let check = |filter: &str, yes: &[&'static str], no: &[&'static str]| {
            let f = parse_filter(filter, GRAPH, Dialect::Graph).unwrap();
            for s in yes {
                assert!(matches(&f, &entity(s, None)), "{filter}: {s}");
            }
            for s in no {
                assert!(!matches(&f, &entity(s, None)), "{filter}: {s}");
            }
        };
        check(
            "severity ge 'medium'",
            &["medium", "high"],
            &["low", "informational", "unknown"],
        );
        check(
            "severity lt 'low'",
            &["unknown", "informational"],
            &["low", "high"],
        );
        check("severity gt 'Medium'", &["high"], &["medium", "low"]);
        check("severity in ('high','low')", &["high", "low"], &["medium"]);
        check(
            "severity eq 'high' or severity eq 'low' and assignedTo eq 'x'",
            &["high"],
            &["low", "medium"],
        );
        check(
            "(severity eq 'high' or severity eq 'low') and lastUpdateDateTime ge 2024-01-01T00:00:00Z",
            &["high", "low"],
            &["medium"],
        );
        check("not (severity eq 'high')", &["low", "medium"], &["high"]);
        check(
            "not severity in ('high', 'medium')",
            &["low"],
            &["high", "medium"],
        );
        let f = parse_filter(
            "assignedTo eq null or assignedTo eq 'a'",
            GRAPH,
            Dialect::Graph,
        )
        .unwrap();
        assert!(matches(&f, &entity("low", None)));
        assert!(matches(&f, &entity("low", Some("a"))));
        assert!(!matches(&f, &entity("low", Some("b"))));
    }

    /// Only the top-level conjunction narrows the index range: an `or` branch never hides
    /// what it would match.
    #[test]
    fn time_range_is_a_superset() {
        let a: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let b: Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
        let f = parse_filter(
            "lastUpdateDateTime ge 2024-01-01T00:00:00Z and (severity eq 'high' and lastUpdateDateTime lt 2024-02-01T00:00:00Z)",
            GRAPH,
            Dialect::Graph,
        )
        .unwrap();
        assert_eq!(time_range(&f, "lastUpdateDateTime"), (Some(a), Some(b)));
        let f = parse_filter(
            "lastUpdateDateTime ge 2024-02-01T00:00:00Z or lastUpdateDateTime lt 2024-01-01T00:00:00Z",
            GRAPH,
            Dialect::Graph,
        )
        .unwrap();
        assert_eq!(time_range(&f, "lastUpdateDateTime"), (None, None));
        let f = parse_filter(
            "not lastUpdateDateTime ge 2024-02-01T00:00:00Z",
            GRAPH,
            Dialect::Graph,
        )
        .unwrap();
        assert_eq!(time_range(&f, "lastUpdateDateTime"), (None, None));
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
            "'high'",
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
                for d in [Dialect::Legacy, Dialect::Graph] {
                    let _ = parse_filter(&words.join(" "), PROPS, d);
                    let _ = parse_filter(&words.concat(), GRAPH, d);
                }
            }

            #[test]
            fn any_text_parses_or_is_refused(text in ".{0,120}") {
                let _ = parse_filter(&text, PROPS, Dialect::Legacy);
                let _ = parse_filter(&text, GRAPH, Dialect::Graph);
            }
        }
    }
}
