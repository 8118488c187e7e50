//! Sigma conditions: `sel1 and not (filter1 or filter2)`, `1 of selection_*`, `all of them`.
//! Precedence: `not` binds tightest, then `and`, then `or`; parentheses group.

use crate::SkipReason;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// A named search identifier (selection).
    Ident(String),
    /// `1 of PATTERN` / `any of` (`pattern` may end in `*`; `them` is every identifier not
    /// starting with `_`).
    OneOf(String),
    /// `all of PATTERN`.
    AllOf(String),
    /// Negation.
    Not(Box<Cond>),
    /// Conjunction.
    And(Vec<Cond>),
    /// Disjunction.
    Or(Vec<Cond>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Pipe,
}

fn tokenize(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Tok>| {
        if !word.is_empty() {
            out.push(Tok::Word(std::mem::take(word)));
        }
    };
    for c in s.chars() {
        match c {
            '(' => {
                flush(&mut word, &mut out);
                out.push(Tok::Open);
            }
            ')' => {
                flush(&mut word, &mut out);
                out.push(Tok::Close);
            }
            '|' => {
                flush(&mut word, &mut out);
                out.push(Tok::Pipe);
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn bad(why: impl Into<String>) -> SkipReason {
    SkipReason::BadCondition(why.into())
}

impl Parser {
    fn peek_word(&self) -> Option<&str> {
        match self.toks.get(self.pos) {
            Some(Tok::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn keyword(&self, k: &str) -> bool {
        self.peek_word().is_some_and(|w| w.eq_ignore_ascii_case(k))
    }

    fn or(&mut self, depth: usize) -> Result<Cond, SkipReason> {
        let mut items = vec![self.and(depth)?];
        while self.keyword("or") {
            self.pos += 1;
            items.push(self.and(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::Or(items)
        })
    }

    fn and(&mut self, depth: usize) -> Result<Cond, SkipReason> {
        let mut items = vec![self.not(depth)?];
        while self.keyword("and") {
            self.pos += 1;
            items.push(self.not(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Cond::And(items)
        })
    }

    fn not(&mut self, depth: usize) -> Result<Cond, SkipReason> {
        if depth > 64 {
            return Err(bad("nested more than 64 levels deep"));
        }
        if self.keyword("not") {
            self.pos += 1;
            return Ok(Cond::Not(Box::new(self.not(depth + 1)?)));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Cond, SkipReason> {
        match self.toks.get(self.pos).cloned() {
            Some(Tok::Open) => {
                self.pos += 1;
                let inner = self.or(depth + 1)?;
                if self.toks.get(self.pos) != Some(&Tok::Close) {
                    return Err(bad("missing closing parenthesis"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Tok::Word(w)) => {
                let quantifier = if w == "1" || w.eq_ignore_ascii_case("any") {
                    Some(true)
                } else if w.eq_ignore_ascii_case("all") {
                    Some(false)
                } else {
                    None
                };
                match quantifier {
                    Some(one) if self.toks.get(self.pos + 1) == Some(&Tok::Word("of".into())) => {
                        let Some(Tok::Word(target)) = self.toks.get(self.pos + 2).cloned() else {
                            return Err(bad(format!("'{w} of' without a target")));
                        };
                        self.pos += 3;
                        Ok(if one {
                            Cond::OneOf(target)
                        } else {
                            Cond::AllOf(target)
                        })
                    }
                    _ => {
                        if ["and", "or", "not", "of"]
                            .iter()
                            .any(|k| w.eq_ignore_ascii_case(k))
                        {
                            return Err(bad(format!("unexpected '{w}'")));
                        }
                        self.pos += 1;
                        Ok(Cond::Ident(w))
                    }
                }
            }
            Some(Tok::Close) => Err(bad("unexpected ')'")),
            Some(Tok::Pipe) => Err(SkipReason::Aggregation),
            None => Err(bad("ends too early")),
        }
    }
}

/// Parses one condition string.
pub fn parse(s: &str) -> Result<Cond, SkipReason> {
    let toks = tokenize(s);
    if toks.contains(&Tok::Pipe) {
        return Err(SkipReason::Aggregation);
    }
    let mut p = Parser { toks, pos: 0 };
    let c = p.or(0)?;
    if p.pos != p.toks.len() {
        return Err(bad(format!(
            "unexpected {:?} after the expression",
            p.toks.get(p.pos)
        )));
    }
    Ok(c)
}

/// Whether a search identifier matches a `1 of` / `all of` pattern (`them`, `name`, `prefix*`,
/// with `*` anywhere).
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    if pattern.eq_ignore_ascii_case("them") {
        return !name.starts_with('_');
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Cond {
        Cond::Ident(s.into())
    }

    #[test]
    fn precedence_and_grouping() {
        assert_eq!(
            parse("a or b and not c").unwrap(),
            Cond::Or(vec![
                id("a"),
                Cond::And(vec![id("b"), Cond::Not(Box::new(id("c")))])
            ])
        );
        assert_eq!(
            parse("(a or b) and not (c or d)").unwrap(),
            Cond::And(vec![
                Cond::Or(vec![id("a"), id("b")]),
                Cond::Not(Box::new(Cond::Or(vec![id("c"), id("d")])))
            ])
        );
        assert_eq!(
            parse("1 of selection_* and not all of filter_*").unwrap(),
            Cond::And(vec![
                Cond::OneOf("selection_*".into()),
                Cond::Not(Box::new(Cond::AllOf("filter_*".into())))
            ])
        );
        assert_eq!(parse("all of them").unwrap(), Cond::AllOf("them".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("selection | count() > 5"),
            Err(SkipReason::Aggregation)
        );
        assert!(parse("(a or b").is_err());
        assert!(parse("a and").is_err());
        assert!(parse("a b").is_err());
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("selection_*", "selection_img"));
        assert!(!pattern_matches("selection_*", "filter_img"));
        assert!(pattern_matches("them", "sel"));
        assert!(!pattern_matches("them", "_private"));
        assert!(pattern_matches("sel*_x", "sel_a_x"));
        assert!(pattern_matches("sel", "sel"));
    }
}
