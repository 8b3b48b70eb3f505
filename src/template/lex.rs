//! The template's lexer: cuts the source into text and actions (`{{…}}`), each action
//! into tokens, with Go's trim markers (`{{- `, ` -}}`), comments (`{{/* … */}}`) and
//! literals (interpreted and raw strings, numbers).

use super::error::Error;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Num(String),
    LParen,
    /// `)` with the `.A.B` chain written right after it.
    RParen(Vec<String>),
    Pipe,
    Declare,
    Assign,
    Comma,
}

pub(super) enum Item {
    Text(String),
    Action(Vec<Tok>),
}

pub(super) fn lex(src: &str) -> Result<Vec<Item>, Error> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    loop {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = text.to_string();
        if trim_next_text {
            text = text.trim_start().to_string();
        }
        let Some(after) = after else {
            if !text.is_empty() {
                items.push(Item::Text(text));
            }
            return Ok(items);
        };
        // `{{- ` trims the whitespace before the action.
        let mut body = after;
        if let Some(b) = body.strip_prefix('-').filter(|b| b.starts_with(char::is_whitespace)) {
            text = text.trim_end().to_string();
            body = b;
        }
        if !text.is_empty() {
            items.push(Item::Text(text));
        }
        let (toks, consumed, trim) = lex_action(body)?;
        if let Some(t) = toks {
            items.push(Item::Action(t));
        }
        trim_next_text = trim;
        rest = &body[consumed..];
    }
}

/// Lex one action body (after `{{`). Returns its tokens (None for a comment), how many
/// bytes it used up to and including `}}`, and whether it ended with ` -}}`.
fn lex_action(s: &str) -> Result<(Option<Vec<Tok>>, usize, bool), Error> {
    let b = s.as_bytes();
    let trimmed = s.trim_start();
    if trimmed.starts_with("/*") {
        let start = s.len() - trimmed.len();
        let close = s[start..].find("*/").ok_or_else(|| Error::Parse("unclosed comment".into()))? + start + 2;
        let tail = &s[close..];
        let t = tail.trim_start();
        if let Some(r) = t.strip_prefix("-}}") {
            return Ok((None, s.len() - r.len(), true));
        }
        if let Some(r) = t.strip_prefix("}}") {
            return Ok((None, s.len() - r.len(), false));
        }
        return Err(Error::Parse("comment ends before closing delimiter".into()));
    }
    let mut toks = Vec::new();
    let mut i = 0;
    let ident_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let read_chain = |mut i: usize| -> (Vec<String>, usize) {
        let mut chain = Vec::new();
        while i + 1 < b.len() && b[i] == b'.' && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_') {
            let start = i + 1;
            i = start;
            while i < b.len() && ident_char(b[i]) {
                i += 1;
            }
            chain.push(s[start..i].to_string());
        }
        (chain, i)
    };
    loop {
        if i >= b.len() {
            return Err(Error::Parse("unclosed action (missing }})".into()));
        }
        let c = b[i];
        if c.is_ascii_whitespace() {
            let ws_end = i + s[i..].len() - s[i..].trim_start().len();
            if s[ws_end..].starts_with("-}}") {
                return Ok((Some(toks), ws_end + 3, true));
            }
            i = ws_end;
            continue;
        }
        if s[i..].starts_with("}}") {
            return Ok((Some(toks), i + 2, false));
        }
        match c {
            b'"' => {
                let (v, n) = lex_quoted(&s[i..])?;
                toks.push(Tok::Str(v));
                i += n;
            }
            b'`' => {
                let close = s[i + 1..].find('`').ok_or_else(|| Error::Parse("unterminated raw string".into()))?;
                toks.push(Tok::Str(s[i + 1..i + 1 + close].to_string()));
                i += close + 2;
            }
            b'.' if i + 1 < b.len() && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_') => {
                let (chain, n) = read_chain(i);
                toks.push(Tok::Field(chain));
                i = n;
            }
            b'.' if i + 1 < b.len() && b[i + 1].is_ascii_digit() => {
                let n = number_len(&b[i..]);
                toks.push(Tok::Num(s[i..i + n].to_string()));
                i += n;
            }
            b'.' => {
                toks.push(Tok::Dot);
                i += 1;
            }
            b'$' => {
                let start = i;
                i += 1;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let name = s[start..i].to_string();
                let (chain, n) = read_chain(i);
                toks.push(Tok::Var(name, chain));
                i = n;
            }
            b'0'..=b'9' => {
                let n = number_len(&b[i..]);
                toks.push(Tok::Num(s[i..i + n].to_string()));
                i += n;
            }
            b'-' | b'+' if i + 1 < b.len() && (b[i + 1].is_ascii_digit() || b[i + 1] == b'.') => {
                let n = 1 + number_len(&b[i + 1..]);
                toks.push(Tok::Num(s[i..i + n].to_string()));
                i += n;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                let (chain, n) = read_chain(i + 1);
                toks.push(Tok::RParen(chain));
                i = n;
            }
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if s[i..].starts_with(":=") => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or('?');
                return Err(Error::Parse(format!("unexpected {ch:?} in action")));
            }
        }
    }
}

fn number_len(b: &[u8]) -> usize {
    let mut n = 0;
    while n < b.len() {
        let c = b[n];
        let exp_sign = (c == b'-' || c == b'+') && n > 0 && matches!(b[n - 1], b'e' | b'E');
        if c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || exp_sign {
            n += 1;
        } else {
            break;
        }
    }
    n
}

/// A Go interpreted string literal at the start of `s`: its value and its length.
fn lex_quoted(s: &str) -> Result<(String, usize), Error> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let (_, e) = chars.next().ok_or_else(|| Error::Parse("unterminated quoted string".into()))?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let hex: String = (0..n).filter_map(|_| chars.next().map(|(_, h)| h)).collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| Error::Parse(format!("bad escape \\{e}{hex}")))?;
                        out.push(ch);
                    }
                    other => return Err(Error::Parse(format!("unknown escape sequence \\{other}"))),
                }
            }
            '\n' => return Err(Error::Parse("newline in quoted string".into())),
            c => out.push(c),
        }
    }
    Err(Error::Parse("unterminated quoted string".into()))
}
