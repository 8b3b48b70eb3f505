//! Docker-style output templates: the part of Go's `text/template` that people put in
//! `--format` (`{{.Field.Sub}}`, `{{json .X}}`, `{{index .Map "key"}}`, pipelines,
//! `if`/`range`/`with`/`else`/`end`, variables, docker's extra functions), evaluated over
//! a `serde_json::Value` so that `ls` and `inspect` share one engine. Values print the
//! way Go's `fmt` prints them: strings raw, numbers plain, `[a b]` for lists,
//! `map[k:v]` for maps, `<no value>` for a missing value. `align_table` is docker's
//! tabwriter, for `table` formats.
//!
//! Both are ours, not a crate's, on purpose. The Go-template crates (`gtmpl`, and the
//! Handlebars/Jinja engines, which are other languages) evaluate over their own value
//! types and print values their own way; this engine reads the `serde_json::Value` the
//! commands already build and prints it, `printf` included, as Go's `fmt` does, which
//! is what a docker user's `--format` expects. The `tabwriter` crate pads to terminal
//! columns (a CJK character or an emoji counts 2, a combining mark 0); Go's tabwriter,
//! and so docker, counts characters, so a table with such a cell would come out
//! different (`table_alignment_counts_characters_as_go_does` pins Go's output).
//!
//! A template comes from the command line, so nothing in it may crash or exhaust the
//! machine: nesting is limited when parsing, and a render stops with an error once it
//! has taken `MAX_STEPS` steps or made a string longer than `MAX_TEXT` bytes
//! (`{{range 1000000000000}}`, `{{pad . 99999999999 0}}`, a string doubled in a loop).

use serde_json::{Map, Value};
use std::fmt::Write as _;

/// How deeply blocks (`if`/`range`/`with`) and parentheses may nest: far more than a
/// real format needs, few enough that parsing and evaluating cannot exhaust the stack.
const MAX_NESTING: usize = 100;
/// The most nodes, range iterations and commands one render may evaluate.
const MAX_STEPS: u64 = 1_000_000;
/// The longest string (the output included) a render may make, in bytes.
const MAX_TEXT: usize = 16 << 20;

/// Why a template could not be parsed or rendered. The texts are Go's where Go has
/// one (`template: unexpected {{end}}`), so that a message reads as docker's does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The template text is not a template we can run (syntax, or an unsupported action).
    #[error("template: {0}")]
    Parse(String),
    /// Running it failed: a missing field, a bad argument, a function we lack, a limit.
    #[error("template: {0}")]
    Exec(String),
    /// The whole output of a listing grew past `MAX_TEXT`.
    #[error("output: result longer than {} MiB", MAX_TEXT >> 20)]
    OutputTooLong,
    /// A value could not be written as JSON (`{{json .}}`, `--format json`).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<Node>,
    missing_key_error: bool,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Action(Pipeline),
    If { cond: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { over: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    With { value: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug)]
struct Pipeline {
    /// `$a := …` or `$i, $e := …` (range).
    vars: Vec<String>,
    /// `:=` declares; `=` assigns to an existing variable.
    declare: bool,
    commands: Vec<Command>,
}

#[derive(Debug)]
struct Command {
    operands: Vec<Operand>,
}

#[derive(Debug)]
enum Operand {
    Dot,
    /// `.A.B`, relative to dot.
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone is the data the template started with).
    Variable(String, Vec<String>),
    Literal(Value),
    Func(String),
    /// `(pipeline).A.B`
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
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

enum Item {
    Text(String),
    Action(Vec<Tok>),
}

impl Template {
    /// Parse `src`. A missing map key prints `<no value>`, as in Go by default.
    pub fn parse(src: &str) -> Result<Template, Error> {
        let items = lex(src)?;
        check_nesting(&items)?;
        let mut pos = 0;
        let (nodes, end) = parse_list(&items, &mut pos)?;
        match end {
            ListEnd::Eof => Ok(Template { nodes, missing_key_error: false }),
            ListEnd::End => Err(Error::Parse("unexpected {{end}}".into())),
            ListEnd::Else(_) => Err(Error::Parse("unexpected {{else}}".into())),
        }
    }

    /// Make a missing map key an error (Go's `missingkey=error`), for data whose keys
    /// are all known, where a missing one can only be a typo.
    pub fn missing_key_error(mut self) -> Template {
        self.missing_key_error = true;
        self
    }

    pub fn render(&self, data: &Value) -> Result<String, Error> {
        self.run(data, false)
    }

    /// Render the header row of a `table` format: `data` maps each field to its column
    /// title and the formatting functions (`json`, `upper`, …) pass their argument
    /// through unchanged, as docker's header functions do.
    pub fn render_header(&self, titles: &Value) -> Result<String, Error> {
        self.run(titles, true)
    }

    fn run(&self, data: &Value, header: bool) -> Result<String, Error> {
        let mut st = State {
            vars: vec![("$".to_string(), data.clone())],
            out: String::new(),
            missing_key_error: self.missing_key_error,
            header,
            steps: 0,
        };
        st.walk(&self.nodes, data)?;
        Ok(st.out)
    }
}

/// What a `--format` option asks a listing command for, read as docker reads it:
/// `table` (the command's default columns), `table TEMPLATE` (a header row, then a row
/// per item, aligned by `align_table`), `json` (each item as one JSON object per line,
/// as docker's `--format json`), or any other template (a line per item, no header).
/// `\t` and `\n` written in the option stand for a tab and a newline, as in docker.
pub enum Format {
    Table(Template),
    Json,
    Lines(Template),
}

impl Format {
    /// Parse `--format` (None: the default table). With `strict`, a field the items do
    /// not have is an error rather than `<no value>` (for items whose fields are all
    /// known, so that a typo is reported).
    pub fn parse(src: Option<&str>, default_table: &str, strict: bool) -> Result<Format, Error> {
        let template = |src: &str| -> Result<Template, Error> {
            let src = src.trim_matches(' ').replace("\\t", "\t").replace("\\n", "\n");
            let t = Template::parse(&src)?;
            Ok(if strict { t.missing_key_error() } else { t })
        };
        Ok(match src.map(|f| f.trim_matches(' ')) {
            None | Some("") | Some("table") => Format::Table(template(default_table)?),
            Some("json") => Format::Json,
            Some(f) if f.starts_with("table") => Format::Table(template(&f["table".len()..])?),
            Some(f) => Format::Lines(template(f)?),
        })
    }

    pub fn is_json(&self) -> bool {
        matches!(self, Format::Json)
    }

    /// The whole output for `items`; `titles` maps each field to its column title for
    /// the header row of a table.
    pub fn render(&self, items: &[Value], titles: &Value) -> Result<String, Error> {
        let rows = |t: &Template| -> Result<String, Error> {
            let mut out = String::new();
            for v in items {
                out.push_str(&t.render(v)?);
                out.push('\n');
                if out.len() > MAX_TEXT {
                    return Err(Error::OutputTooLong);
                }
            }
            Ok(out)
        };
        Ok(match self {
            Format::Json => {
                let mut out = String::new();
                for v in items {
                    out.push_str(&serde_json::to_string(v)?);
                    out.push('\n');
                }
                out
            }
            Format::Lines(t) => rows(t)?,
            Format::Table(t) => align_table(&format!("{}\n{}", t.render_header(titles)?, rows(t)?)),
        })
    }
}

// ---- lexing --------------------------------------------------------------------------

fn lex(src: &str) -> Result<Vec<Item>, Error> {
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

// ---- parsing -------------------------------------------------------------------------

/// Refuse a template whose blocks or parentheses nest more than `MAX_NESTING` deep,
/// before the recursive parser sees it.
fn check_nesting(items: &[Item]) -> Result<(), Error> {
    let mut blocks = 0usize;
    for item in items {
        let Item::Action(toks) = item else { continue };
        match toks.first() {
            Some(Tok::Ident(k)) if matches!(k.as_str(), "if" | "range" | "with") => blocks += 1,
            Some(Tok::Ident(k)) if k == "end" => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        let mut parens = 0usize;
        let mut deepest = 0;
        for t in toks {
            match t {
                Tok::LParen => {
                    parens += 1;
                    deepest = deepest.max(parens);
                }
                Tok::RParen(_) => parens = parens.saturating_sub(1),
                _ => {}
            }
        }
        if blocks > MAX_NESTING || deepest > MAX_NESTING {
            return Err(Error::Parse(format!("nested more than {MAX_NESTING} levels deep")));
        }
    }
    Ok(())
}

enum ListEnd {
    Eof,
    End,
    /// `{{else …}}` with whatever followed `else` (`if …` for `else if`).
    Else(Vec<Tok>),
}

fn parse_list(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, ListEnd), Error> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        let toks = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Item::Action(toks) => toks,
        };
        let keyword = match toks.first() {
            Some(Tok::Ident(k)) => k.as_str(),
            None => return Err(Error::Parse("missing value for command".into())),
            _ => "",
        };
        match keyword {
            "end" => {
                if toks.len() > 1 {
                    return Err(Error::Parse("unexpected tokens after end".into()));
                }
                return Ok((nodes, ListEnd::End));
            }
            "else" => return Ok((nodes, ListEnd::Else(toks[1..].to_vec()))),
            "if" | "range" | "with" => nodes.push(parse_block(keyword, &toks[1..], items, pos)?),
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(Error::Parse(format!("{{{{{keyword}}}}} is not supported")))
            }
            _ => nodes.push(Node::Action(parse_pipeline(toks)?)),
        }
    }
    Ok((nodes, ListEnd::Eof))
}

fn parse_block(keyword: &str, toks: &[Tok], items: &[Item], pos: &mut usize) -> Result<Node, Error> {
    let pipe = parse_pipeline(toks)?;
    if pipe.commands.is_empty() {
        return Err(Error::Parse(format!("missing value for {keyword}")));
    }
    let (body, end) = parse_list(items, pos)?;
    let otherwise = match end {
        ListEnd::Eof => return Err(Error::Parse(format!("unexpected EOF: {{{{{keyword}}}}} has no {{{{end}}}}"))),
        ListEnd::End => Vec::new(),
        ListEnd::Else(rest) if rest.is_empty() => match parse_list(items, pos)? {
            (nodes, ListEnd::End) => nodes,
            (_, ListEnd::Else(_)) => return Err(Error::Parse("more than one {{else}}".into())),
            (_, ListEnd::Eof) => {
                return Err(Error::Parse(format!("unexpected EOF: {{{{{keyword}}}}} has no {{{{end}}}}")))
            }
        },
        // `{{else if …}}` / `{{else with …}}`: a nested block that ends at our `{{end}}`.
        ListEnd::Else(rest) => match rest.first() {
            Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                let k = k.clone();
                vec![parse_block(&k, &rest[1..], items, pos)?]
            }
            _ => return Err(Error::Parse("unexpected tokens after else".into())),
        },
    };
    Ok(match keyword {
        "if" => Node::If { cond: pipe, then: body, otherwise },
        "range" => Node::Range { over: pipe, body, otherwise },
        _ => Node::With { value: pipe, body, otherwise },
    })
}

fn parse_pipeline(toks: &[Tok]) -> Result<Pipeline, Error> {
    let mut vars = Vec::new();
    let mut declare = true;
    let mut rest = toks;
    // Leading `$a :=`, `$i, $e :=` or `$a =`.
    let decl_end = toks.iter().position(|t| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(end) = decl_end {
        let head = &toks[..end];
        let is_decl = !head.is_empty()
            && head.iter().enumerate().all(|(i, t)| match t {
                Tok::Var(_, chain) => i % 2 == 0 && chain.is_empty(),
                Tok::Comma => i % 2 == 1,
                _ => false,
            });
        if is_decl {
            vars = head.iter().filter_map(|t| if let Tok::Var(n, _) = t { Some(n.clone()) } else { None }).collect();
            declare = toks[end] == Tok::Declare;
            rest = &toks[end + 1..];
        }
    }
    let mut commands = Vec::new();
    let mut i = 0;
    loop {
        let (cmd, used) = parse_command(&rest[i..])?;
        commands.push(cmd);
        i += used;
        match rest.get(i) {
            None => break,
            Some(Tok::Pipe) => i += 1,
            Some(t) => return Err(Error::Parse(format!("unexpected {t:?} in pipeline"))),
        }
    }
    Ok(Pipeline { vars, declare, commands })
}

/// A command runs until `|`, `)` or the end; returns it and the tokens it used.
fn parse_command(toks: &[Tok]) -> Result<(Command, usize), Error> {
    let mut operands = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let op = match &toks[i] {
            Tok::Pipe | Tok::RParen(_) => break,
            Tok::Dot => Operand::Dot,
            Tok::Field(chain) => Operand::Field(chain.clone()),
            Tok::Var(n, chain) => Operand::Variable(n.clone(), chain.clone()),
            Tok::Str(s) => Operand::Literal(Value::String(s.clone())),
            Tok::Num(n) => Operand::Literal(parse_number(n)?),
            Tok::Ident(id) => match id.as_str() {
                "true" => Operand::Literal(Value::Bool(true)),
                "false" => Operand::Literal(Value::Bool(false)),
                "nil" => Operand::Literal(Value::Null),
                _ => Operand::Func(id.clone()),
            },
            Tok::LParen => {
                let close = matching_paren(&toks[i..]).ok_or_else(|| Error::Parse("unclosed left paren".into()))? + i;
                let inner = parse_pipeline(&toks[i + 1..close])?;
                let Tok::RParen(chain) = &toks[close] else { unreachable!() };
                i = close;
                Operand::Sub(Box::new(inner), chain.clone())
            }
            t => return Err(Error::Parse(format!("unexpected {t:?} in command"))),
        };
        operands.push(op);
        i += 1;
    }
    if operands.is_empty() {
        return Err(Error::Parse("missing value for command".into()));
    }
    if let Some(Tok::RParen(_)) = toks.get(i) {
        return Err(Error::Parse("unexpected right paren".into()));
    }
    Ok((Command { operands }, i))
}

fn matching_paren(toks: &[Tok]) -> Option<usize> {
    let mut depth = 0;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen(_) => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_number(n: &str) -> Result<Value, Error> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(Value::from(i));
    }
    n.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| Error::Parse(format!("bad number syntax: {n:?}")))
}

// ---- evaluation ----------------------------------------------------------------------

struct State {
    vars: Vec<(String, Value)>,
    out: String,
    missing_key_error: bool,
    header: bool,
    /// Steps taken so far, against `MAX_STEPS`.
    steps: u64,
}

impl State {
    fn step(&mut self) -> Result<(), Error> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Error::Exec(format!("evaluation stopped after {MAX_STEPS} steps (a range too long?)")));
        }
        Ok(())
    }

    fn emit(&mut self, text: &str) -> Result<(), Error> {
        if self.out.len() + text.len() > MAX_TEXT {
            return Err(Error::Exec(format!("output longer than {} MiB", MAX_TEXT >> 20)));
        }
        self.out.push_str(text);
        Ok(())
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), Error> {
        for node in nodes {
            self.step()?;
            match node {
                Node::Text(t) => self.emit(t)?,
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    // An action that only declares a variable prints nothing, as in Go.
                    if p.vars.is_empty() {
                        self.emit(&go_print(&v))?;
                    }
                }
                Node::If { cond, then, otherwise } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(cond, dot)?;
                    let r = self.walk(if truthy(&v) { then } else { otherwise }, dot);
                    self.vars.truncate(mark);
                    r?;
                }
                Node::With { value, body, otherwise } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(value, dot)?;
                    let r = if truthy(&v) { self.walk(body, &v) } else { self.walk(otherwise, dot) };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Range { over, body, otherwise } => {
                    let mark = self.vars.len();
                    let r = self.range(over, body, otherwise, dot);
                    self.vars.truncate(mark);
                    r?;
                }
            }
        }
        Ok(())
    }

    fn range(&mut self, over: &Pipeline, body: &[Node], otherwise: &[Node], dot: &Value) -> Result<(), Error> {
        // The range variables are bound per element, not to the whole value.
        let v = self.eval_commands(over, dot)?;
        // Elements are made one at a time: a range over a large number must cost steps
        // (and stop at the limit), not memory up front.
        let count = match &v {
            Value::Array(a) => a.len() as u64,
            Value::Object(m) => m.len() as u64,
            Value::Null => 0,
            Value::Number(n) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
            other => return Err(Error::Exec(format!("range can't iterate over {}", go_print(other)))),
        };
        if count == 0 {
            return self.walk(otherwise, dot);
        }
        if over.vars.len() > 2 {
            return Err(Error::Exec("too many declarations in range".into()));
        }
        let mut keys = match &v {
            Value::Object(m) => Some(m.iter()),
            _ => None,
        };
        let mark = self.vars.len();
        for i in 0..count {
            self.step()?;
            let (key, elem) = match (&v, keys.as_mut()) {
                (Value::Array(a), _) => (Value::from(i), a[i as usize].clone()),
                (_, Some(it)) => match it.next() {
                    Some((k, e)) => (Value::String(k.clone()), e.clone()),
                    None => break,
                },
                _ => (Value::from(i), Value::from(i)),
            };
            self.vars.truncate(mark);
            match over.vars.as_slice() {
                [e] => self.vars.push((e.clone(), elem.clone())),
                [k, e] => {
                    self.vars.push((k.clone(), key));
                    self.vars.push((e.clone(), elem.clone()));
                }
                _ => {}
            }
            self.walk(body, &elem)?;
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, Error> {
        let v = self.eval_commands(p, dot)?;
        for name in &p.vars {
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else {
                let slot = self.vars.iter_mut().rev().find(|(n, _)| n == name);
                let slot = slot.ok_or_else(|| Error::Exec(format!("undefined variable: {name}")))?;
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    fn eval_commands(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, Error> {
        let mut piped: Option<Value> = None;
        for cmd in &p.commands {
            piped = Some(self.command(cmd, dot, piped)?);
        }
        Ok(piped.unwrap_or(Value::Null))
    }

    fn command(&mut self, cmd: &Command, dot: &Value, piped: Option<Value>) -> Result<Value, Error> {
        self.step()?;
        if let Operand::Func(name) = &cmd.operands[0] {
            let mut args = Vec::new();
            for op in &cmd.operands[1..] {
                args.push(self.operand(op, dot)?);
            }
            args.extend(piped);
            return self.call(name, args).and_then(capped);
        }
        if cmd.operands.len() > 1 || piped.is_some() {
            return Err(Error::Exec(format!("can't give argument to non-function {}", describe(&cmd.operands[0]))));
        }
        self.operand(&cmd.operands[0], dot)
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Value, Error> {
        match op {
            Operand::Dot => Ok(dot.clone()),
            Operand::Field(chain) => self.fields(dot, chain),
            Operand::Variable(name, chain) => {
                let v = self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.clone());
                let v = v.ok_or_else(|| Error::Exec(format!("undefined variable: {name}")))?;
                self.fields(&v, chain)
            }
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Func(name) => self.call(name, Vec::new()).and_then(capped),
            Operand::Sub(p, chain) => {
                let v = self.eval_commands(p, dot)?;
                self.fields(&v, chain)
            }
        }
    }

    fn fields(&self, v: &Value, chain: &[String]) -> Result<Value, Error> {
        let mut cur = v.clone();
        for name in chain {
            cur = match cur {
                Value::Object(mut m) => match m.remove(name) {
                    Some(x) => x,
                    None if self.missing_key_error => {
                        let known: Vec<&str> = m.keys().map(String::as_str).collect();
                        return Err(Error::Exec(format!("no field {name:?} (known fields: {})", known.join(", "))));
                    }
                    None => Value::Null,
                },
                // A missing map along the way reads as a missing value, as indexing a
                // nil map does in Go.
                Value::Null => Value::Null,
                other => return Err(Error::Exec(format!("can't evaluate field {name} in type {}", type_name(&other)))),
            };
        }
        Ok(cur)
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, Error> {
        let want = |n: usize| -> Result<(), Error> {
            if args.len() == n {
                Ok(())
            } else {
                Err(Error::Exec(format!("wrong number of args for {name}: want {n} got {}", args.len())))
            }
        };
        // Docker renders table headers with these functions turned into identities.
        if self.header && matches!(name, "json" | "split" | "join" | "title" | "lower" | "upper" | "truncate" | "pad") {
            return args.into_iter().next().ok_or_else(|| Error::Exec(format!("wrong number of args for {name}")));
        }
        match name {
            "json" => {
                want(1)?;
                Ok(Value::String(serde_json::to_string(&args[0])?))
            }
            "index" => {
                let mut it = args.into_iter();
                let mut cur = it
                    .next()
                    .ok_or_else(|| Error::Exec("wrong number of args for index: want at least 1 got 0".into()))?;
                for key in it {
                    cur = index(&cur, &key)?;
                }
                Ok(cur)
            }
            "len" => {
                want(1)?;
                let n = match &args[0] {
                    Value::String(s) => s.len(),
                    Value::Array(a) => a.len(),
                    Value::Object(m) => m.len(),
                    other => return Err(Error::Exec(format!("len of type {}", type_name(other)))),
                };
                Ok(Value::from(n))
            }
            "join" => {
                want(2)?;
                let sep = text_of(&args[1]);
                match &args[0] {
                    Value::Array(a) => {
                        // Check the length first: a long separator between many parts
                        // multiplies.
                        let parts: Vec<String> = a.iter().map(text_of).collect();
                        let sep_total = sep.len().saturating_mul(parts.len().saturating_sub(1));
                        let total = parts.iter().fold(sep_total, |n, p| n.saturating_add(p.len()));
                        check_len("join", total)?;
                        Ok(Value::String(parts.join(&sep)))
                    }
                    Value::Null => Ok(Value::String(String::new())),
                    other => Err(Error::Exec(format!("join: expected a list, got {}", type_name(other)))),
                }
            }
            "split" => {
                want(2)?;
                let (s, sep) = (text_of(&args[0]), text_of(&args[1]));
                // Splitting by "" makes a part per character: keep the list bounded too.
                check_len("split", s.len().saturating_mul(8))?;
                Ok(Value::Array(s.split(sep.as_str()).map(|p| Value::String(p.to_string())).collect()))
            }
            "lower" => {
                want(1)?;
                Ok(Value::String(text_of(&args[0]).to_lowercase()))
            }
            "upper" => {
                want(1)?;
                Ok(Value::String(text_of(&args[0]).to_uppercase()))
            }
            "title" => {
                want(1)?;
                Ok(Value::String(title(&text_of(&args[0]))))
            }
            "truncate" => {
                want(2)?;
                let n = args[1]
                    .as_u64()
                    .ok_or_else(|| Error::Exec("truncate: the length must be a non-negative integer".into()))?;
                Ok(Value::String(text_of(&args[0]).chars().take(n as usize).collect()))
            }
            "pad" => {
                want(3)?;
                let width = |v: &Value| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(usize::MAX);
                let (pre, post, text) = (width(&args[1]), width(&args[2]), text_of(&args[0]));
                check_len("pad", pre.saturating_add(post).saturating_add(text.len()))?;
                Ok(Value::String(format!("{}{text}{}", " ".repeat(pre), " ".repeat(post))))
            }
            "print" => Ok(Value::String(sprint(&args)?)),
            "println" => {
                let mut out = String::new();
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(&go_print_inner(a));
                    check_len("println", out.len())?;
                }
                out.push('\n');
                Ok(Value::String(out))
            }
            "printf" => {
                let (fmt, rest) = args
                    .split_first()
                    .ok_or_else(|| Error::Exec("wrong number of args for printf: want at least 1 got 0".into()))?;
                Ok(Value::String(sprintf(&text_of(fmt), rest)?))
            }
            "not" => {
                want(1)?;
                Ok(Value::Bool(!truthy(&args[0])))
            }
            // Go's `and` / `or` return the deciding argument, not a bool.
            "and" => Ok(args.iter().find(|a| !truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null)),
            "or" => Ok(args.iter().find(|a| truthy(a)).or(args.last()).cloned().unwrap_or(Value::Null)),
            "eq" => {
                let (first, rest) =
                    args.split_first().ok_or_else(|| Error::Exec("missing argument for comparison".into()))?;
                if rest.is_empty() {
                    return Err(Error::Exec("missing argument for comparison".into()));
                }
                Ok(Value::Bool(rest.iter().any(|r| same(first, r))))
            }
            "ne" => {
                want(2)?;
                Ok(Value::Bool(!same(&args[0], &args[1])))
            }
            _ => Err(Error::Exec(format!("function {name:?} not defined"))),
        }
    }
}

/// Refuse to make a string longer than `MAX_TEXT` bytes (before making it, where the
/// length is known in advance).
fn check_len(what: &str, len: usize) -> Result<(), Error> {
    if len > MAX_TEXT {
        return Err(Error::Exec(format!("{what}: result longer than {} MiB", MAX_TEXT >> 20)));
    }
    Ok(())
}

/// A function's result, if it is not longer than `MAX_TEXT`.
fn capped(v: Value) -> Result<Value, Error> {
    if let Value::String(s) = &v {
        check_len("string", s.len())?;
    }
    Ok(v)
}

fn describe(op: &Operand) -> String {
    match op {
        Operand::Dot => ".".into(),
        Operand::Field(c) => format!(".{}", c.join(".")),
        Operand::Variable(n, c) if c.is_empty() => n.clone(),
        Operand::Variable(n, c) => format!("{n}.{}", c.join(".")),
        Operand::Literal(v) => go_print(v),
        Operand::Func(f) => f.clone(),
        Operand::Sub(..) => "(…)".into(),
    }
}

fn index(v: &Value, key: &Value) -> Result<Value, Error> {
    match v {
        Value::Object(m) => Ok(m.get(&text_of(key)).cloned().unwrap_or(Value::Null)),
        Value::Array(a) => {
            let i =
                key.as_u64().ok_or_else(|| Error::Exec(format!("cannot index list with {}", go_print(key))))? as usize;
            a.get(i).cloned().ok_or_else(|| Error::Exec(format!("error calling index: index out of range: {i}")))
        }
        Value::String(s) => {
            let i = key.as_u64().ok_or_else(|| Error::Exec(format!("cannot index string with {}", go_print(key))))?
                as usize;
            s.as_bytes()
                .get(i)
                .map(|b| Value::from(*b))
                .ok_or_else(|| Error::Exec(format!("error calling index: index out of range: {i}")))
        }
        Value::Null => Ok(Value::Null),
        other => Err(Error::Exec(format!("can't index item of type {}", type_name(other)))),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_letter = false;
    for c in s.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '_' || c == '\'';
    }
    out
}

/// A string argument as Go would see it (strings raw, other values printed).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => go_print(other),
    }
}

/// How a template action prints a value: Go's `fmt.Print`, with a missing value
/// shown as `<no value>` at the top level.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        other => go_print_inner(other),
    }
}

fn go_print_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print_inner).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!("map[{}]", print_map(m)),
    }
}

fn print_map(m: &Map<String, Value>) -> String {
    // serde_json's map iterates in key order, as Go prints maps.
    m.iter().map(|(k, v)| format!("{k}:{}", go_print_inner(v))).collect::<Vec<_>>().join(" ")
}

/// Go's `fmt.Sprint`: a space between operands when neither side is a string.
fn sprint(args: &[Value]) -> Result<String, Error> {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !args[i - 1].is_string() && !a.is_string() {
            out.push(' ');
        }
        out.push_str(&go_print_inner(a));
        check_len("print", out.len())?;
    }
    Ok(out)
}

/// Go's `fmt.Sprintf` for the verbs a format string uses: `%v %s %d %q %x %X %o %b %c
/// %t %f %e %g %%`, with flags (`-` left-justifies, `0` pads numbers with zeros, `+`
/// always signs them, ` ` leaves room for a sign, `#` adds a base prefix), a width and
/// a precision (`%-10s`, `%5d`, `%.2f`, `%.3s`; `*` takes them from the arguments).
/// A verb that does not fit its argument prints as Go prints it: `%!d(string=x)`.
fn sprintf(fmt: &str, args: &[Value]) -> Result<String, Error> {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        check_len("printf", out.len())?;
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '0' => spec.zero = true,
                ' ' => spec.space = true,
                '#' => spec.sharp = true,
                _ => break,
            }
            chars.next();
        }
        // A width or precision of `*` is taken from the next argument, as in Go.
        let mut number = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| -> Option<usize> {
            if chars.peek() == Some(&'*') {
                chars.next();
                let n = args.next().and_then(Value::as_i64).unwrap_or(0);
                return Some(usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX));
            }
            let mut n: Option<usize> = None;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = Some(n.unwrap_or(0).saturating_mul(10).saturating_add(d as usize));
                chars.next();
            }
            n
        };
        spec.width = number(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(number(&mut chars).unwrap_or(0));
        }
        // Padding and precision digits are made before the string that holds them:
        // bound them first.
        check_len("printf", spec.width.unwrap_or(0).max(spec.precision.unwrap_or(0)).saturating_add(out.len()))?;
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match args.next() {
            Some(a) => out.push_str(&spec.format(verb, a)),
            None => {
                let _ = write!(out, "%!{verb}(MISSING)");
            }
        }
    }
    if let Some(extra) = args.next() {
        let rest: Vec<String> = std::iter::once(extra).chain(args).map(go_print_typed).collect();
        let _ = write!(out, "%!(EXTRA {})", rest.join(", "));
    }
    check_len("printf", out.len())?;
    Ok(out)
}

/// A value as Go's fmt names a bad argument: `string=x`, `int=3`.
fn go_print_typed(v: &Value) -> String {
    format!("{}={}", type_name(v), go_print_inner(v))
}

/// One `%…` directive of a printf format.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    zero: bool,
    space: bool,
    sharp: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

impl Spec {
    fn format(&self, verb: char, v: &Value) -> String {
        let bad = || format!("%!{verb}({})", go_print_typed(v));
        let int = v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
        let (text, numeric) = match verb {
            'v' | 's' => {
                let s = go_print_inner(v);
                // For strings the precision cuts the text (in characters).
                let s = match self.precision {
                    Some(p) if v.is_string() || verb == 's' => s.chars().take(p).collect(),
                    _ => s,
                };
                (s, v.is_number())
            }
            'q' => match v {
                Value::String(s) => (go_quote(s), false),
                _ => return bad(),
            },
            't' => match v {
                Value::Bool(b) => (b.to_string(), false),
                _ => return bad(),
            },
            'c' => match int.and_then(|i| u32::try_from(i).ok()).and_then(char::from_u32) {
                Some(c) => (c.to_string(), false),
                None => return bad(),
            },
            'd' | 'o' | 'b' | 'x' | 'X' => match (int, v) {
                (Some(i), _) => (self.integer(verb, i), true),
                (None, Value::String(s)) if matches!(verb, 'x' | 'X') => {
                    let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                    (if verb == 'X' { hex.to_uppercase() } else { hex }, false)
                }
                _ => return bad(),
            },
            'f' | 'F' | 'e' | 'E' | 'g' | 'G' => match v.as_f64() {
                Some(f) => (self.float(verb, f), true),
                None => return bad(),
            },
            _ => return bad(),
        };
        self.pad(text, numeric)
    }

    fn sign(&self, negative: bool) -> &'static str {
        match () {
            _ if negative => "-",
            _ if self.plus => "+",
            _ if self.space => " ",
            _ => "",
        }
    }

    fn integer(&self, verb: char, i: i128) -> String {
        let n = i.unsigned_abs();
        let (digits, prefix) = match verb {
            'o' => (format!("{n:o}"), "0"),
            'b' => (format!("{n:b}"), "0b"),
            'x' => (format!("{n:x}"), "0x"),
            'X' => (format!("{n:X}"), "0X"),
            _ => (n.to_string(), ""),
        };
        // A precision is a minimum number of digits.
        let digits = match self.precision {
            Some(p) if digits.len() < p => format!("{}{digits}", "0".repeat(p - digits.len())),
            _ => digits,
        };
        let prefix = if self.sharp { prefix } else { "" };
        format!("{}{prefix}{digits}", self.sign(i < 0))
    }

    fn float(&self, verb: char, f: f64) -> String {
        let p = self.precision;
        let body = match verb {
            'f' | 'F' => format!("{:.*}", p.unwrap_or(6), f.abs()),
            'e' | 'E' => go_exponent(&format!("{:.*e}", p.unwrap_or(6), f.abs())),
            // %g: the shortest form that reads back the same, unless a precision says
            // how many digits.
            _ => match p {
                Some(p) => {
                    let p = p.max(1);
                    let exp = if f == 0.0 { 0 } else { f.abs().log10().floor() as i32 };
                    if exp < -4 || exp >= p as i32 {
                        go_exponent(&trim_zeros_e(&format!("{:.*e}", p - 1, f.abs())))
                    } else {
                        trim_zeros(&format!("{:.*}", (p as i32 - 1 - exp).max(0) as usize, f.abs()))
                    }
                }
                None => f.abs().to_string(),
            },
        };
        let body = if verb.is_ascii_uppercase() { body.to_uppercase() } else { body };
        format!("{}{body}", self.sign(f.is_sign_negative() && f != 0.0))
    }

    /// Pad to the width, in characters: spaces on the left (on the right with `-`), or
    /// zeros after the sign for a number with `0`.
    fn pad(&self, text: String, numeric: bool) -> String {
        let Some(width) = self.width else { return text };
        let len = text.chars().count();
        if len >= width {
            return text;
        }
        let fill = width - len;
        if self.minus {
            format!("{text}{}", " ".repeat(fill))
        } else if self.zero && numeric {
            let sign_len = text.starts_with(['-', '+', ' ']) as usize;
            format!("{}{}{}", &text[..sign_len], "0".repeat(fill), &text[sign_len..])
        } else {
            format!("{}{text}", " ".repeat(fill))
        }
    }
}

/// Go's `strconv.Quote` for the characters templates meet: JSON's escapes are the same
/// except that Go writes control characters as `\x01`, not `\u0001`.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Rust writes `1.5e2`, Go `1.5e+02`.
fn go_exponent(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s.to_string(),
    }
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn trim_zeros_e(s: &str) -> String {
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", trim_zeros(m)),
        None => s.to_string(),
    }
}

/// Docker's table writer (Go's `tabwriter` with minwidth 10, padding 3, spaces):
/// cells end at a tab; within a block of consecutive lines that have a cell in a
/// column, that column is as wide as its widest cell plus 3, and at least 10. The last
/// cell of a line is not padded.
pub fn align_table(text: &str) -> String {
    const MIN_WIDTH: usize = 10;
    const PADDING: usize = 3;
    let had_final_newline = text.ends_with('\n');
    let body = text.strip_suffix('\n').unwrap_or(text);
    let lines: Vec<Vec<&str>> = body.split('\n').map(|l| l.split('\t').collect()).collect();

    // A column's width is shared by each run of consecutive lines that have a cell in
    // it (a cell is tab-terminated, so a line of n tabs has cells in columns 0..n). A
    // line with a cell in column c has one in every column before it, so the runs nest
    // as tabwriter's recursion nests its blocks; computed column by column here, so
    // that a line of many tabs costs no stack.
    // One pass: `open[c]` is the run that column c is in (its first line, its width so
    // far); a line without column c ends it, and its width is given to its lines.
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|cells| vec![0; cells.len() - 1]).collect();
    let mut open: Vec<(usize, usize)> = Vec::new();
    let close = |open: &mut Vec<(usize, usize)>, keep: usize, line: usize, widths: &mut Vec<Vec<usize>>| {
        while open.len() > keep {
            let column = open.len() - 1;
            let (start, width) = open.pop().unwrap_or_default();
            for w in &mut widths[start..line] {
                w[column] = width;
            }
        }
    };
    for (i, cells) in lines.iter().enumerate() {
        let have = cells.len() - 1;
        close(&mut open, have, i, &mut widths);
        for (column, cell) in cells[..have].iter().enumerate() {
            let width = cell.chars().count() + PADDING;
            match open.get_mut(column) {
                Some((_, w)) => *w = (*w).max(width),
                None => open.push((i, width.max(MIN_WIDTH))),
            }
        }
    }
    close(&mut open, 0, lines.len(), &mut widths);
    let out: Vec<String> = lines
        .iter()
        .zip(&widths)
        .map(|(cells, widths)| {
            let mut s = String::new();
            for (j, cell) in cells.iter().enumerate() {
                s.push_str(cell);
                if let Some(w) = widths.get(j) {
                    s.push_str(&" ".repeat(w.saturating_sub(cell.chars().count())));
                }
            }
            s
        })
        .collect();
    let mut s = out.join("\n");
    if had_final_newline {
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(t: &str, data: &Value) -> String {
        Template::parse(t).unwrap_or_else(|e| panic!("{t}: {e}")).render(data).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    fn data() -> Value {
        json!({
            "Id": "sha256:abc",
            "Size": 1234567,
            "Ratio": 1.5,
            "RepoTags": ["app:1", "app:2"],
            "Empty": [],
            "Config": {"Labels": {"b": "2", "a": "1"}, "Env": ["A=1"], "User": ""},
            "Nothing": null,
            "Yes": true
        })
    }

    #[test]
    fn fields_print_as_go_does() {
        let d = data();
        assert_eq!(render("{{.Id}}", &d), "sha256:abc");
        assert_eq!(render("{{.Size}}", &d), "1234567");
        assert_eq!(render("{{.Ratio}}", &d), "1.5");
        assert_eq!(render("{{.RepoTags}}", &d), "[app:1 app:2]");
        assert_eq!(render("{{.Config.Labels}}", &d), "map[a:1 b:2]");
        assert_eq!(render("{{.Nothing}}", &d), "<no value>");
        assert_eq!(render("{{.Missing}}", &d), "<no value>");
        assert_eq!(render("{{.Config.Missing.Deeper}}", &d), "<no value>");
        assert_eq!(render("{{.Yes}}", &d), "true");
        assert_eq!(render("{{.Empty}}", &d), "[]");
        assert_eq!(render("x {{.Id}} y\n", &d), "x sha256:abc y\n");
        assert_eq!(render("{{.}}", &json!({"a": [1, null]})), "map[a:[1 <nil>]]");
    }

    #[test]
    fn json_index_and_pipelines() {
        let d = data();
        assert_eq!(render("{{json .Config.Labels}}", &d), r#"{"a":"1","b":"2"}"#);
        assert_eq!(render("{{json .Id}}", &d), r#""sha256:abc""#);
        assert_eq!(render("{{.Config.Labels | json}}", &d), r#"{"a":"1","b":"2"}"#);
        assert_eq!(render(r#"{{index .Config.Labels "b"}}"#, &d), "2");
        assert_eq!(render(r#"{{index .Config.Labels "zz"}}"#, &d), "<no value>");
        assert_eq!(render("{{index .RepoTags 1}}", &d), "app:2");
        assert_eq!(render(r#"{{join .RepoTags ", "}}"#, &d), "app:1, app:2");
        assert_eq!(
            render(r#"{{.Id | upper}} {{lower "AB"}} {{title "hello world"}}"#, &d),
            "SHA256:ABC ab Hello World"
        );
        assert_eq!(render("{{len .RepoTags}}", &d), "2");
        assert_eq!(render(r#"{{truncate .Id 6}}|{{pad "x" 1 2}}|"#, &d), "sha256| x  |");
        assert_eq!(render(r#"{{split "a,b" ","}}"#, &d), "[a b]");
        assert_eq!(render(r#"{{(index .RepoTags 0) | printf "%s!"}}"#, &d), "app:1!");
        assert_eq!(render(r#"{{printf "%s=%d %q" "a" 3 "b"}}"#, &d), r#"a=3 "b""#);
        assert_eq!(render(r#"{{print 1 2 "x" 3}}"#, &d), "1 2x3");
        assert_eq!(render(r#"{{println "a" 1}}"#, &d), "a 1\n");
    }

    #[test]
    fn printf_takes_go_flags_widths_and_precisions() {
        let d = data();
        let p = |f: &str| render(f, &d);
        assert_eq!(p(r#"{{printf "%-10s|" "app"}}"#), "app       |");
        assert_eq!(p(r#"{{printf "%10s|" "app"}}"#), "       app|");
        assert_eq!(p(r#"{{printf "%5d|%-5d|%05d|%+d" 42 42 42 42}}"#), "   42|42   |00042|+42");
        assert_eq!(p(r#"{{printf "%05d|% d|%x|%X|%#x|%o|%b" -42 7 255 255 255 8 5}}"#), "-0042| 7|ff|FF|0xff|10|101");
        assert_eq!(
            p(r#"{{printf "%.2f|%8.3f|%e|%g|%.3g" 3.14159 2.5 1234.5 0.5 1234.5}}"#),
            "3.14|   2.500|1.234500e+03|0.5|1.23e+03"
        );
        assert_eq!(p(r#"{{printf "%.3s|%-6.2s|" "abcdef" "xyz"}}"#), "abc|xy    |");
        assert_eq!(p(r#"{{printf "%q|%t|%c|%v|%%" "a\"b" true 65 .RepoTags}}"#), r#""a\"b"|true|A|[app:1 app:2]|%"#);
        assert_eq!(p(r#"{{printf "%*d|%-*s|" 4 7 3 "x"}}"#), "   7|x  |");
        // Widths count characters, not bytes.
        assert_eq!(p(r#"{{printf "%-4s|" "é"}}"#), "é   |");
        assert_eq!(p(r#"{{printf "%x" "hi"}}"#), "6869");
        // What Go prints for a verb that does not fit, a missing or an extra argument.
        assert_eq!(p(r#"{{printf "%d" "x"}}"#), "%!d(string=x)");
        assert_eq!(p(r#"{{printf "%s %s" "a"}}"#), "a %!s(MISSING)");
        assert_eq!(p(r#"{{printf "%s" "a" 1}}"#), "a%!(EXTRA int=1)");
        assert_eq!(p(r#"{{printf "%-12s%s" .Id "!"}}"#), "sha256:abc  !");
        assert_eq!(p(r#"{{printf "%7d" .Size}}"#), "1234567");
        // A huge width is refused, not allocated.
        for huge in [
            r#"{{printf "%99999999999d" 1}}"#,
            r#"{{printf "%.99999999999d" 1}}"#,
            r#"{{printf "%.*f" 99999999999 1.5}}"#,
        ] {
            let err = Template::parse(huge).unwrap().render(&d).unwrap_err().to_string();
            assert!(err.contains("longer than"), "{huge}: {err}");
        }
    }

    #[test]
    fn control_structures_and_variables() {
        let d = data();
        assert_eq!(render("{{range .RepoTags}}[{{.}}]{{end}}", &d), "[app:1][app:2]");
        assert_eq!(render("{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}", &d), "0=app:1 1=app:2 ");
        assert_eq!(render("{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}};{{end}}", &d), "a:1;b:2;");
        assert_eq!(render("{{range .Empty}}x{{else}}none{{end}}", &d), "none");
        assert_eq!(render("{{if .Config.User}}u{{else if .Yes}}yes{{else}}no{{end}}", &d), "yes");
        assert_eq!(render("{{if not .Nothing}}empty{{end}}", &d), "empty");
        assert_eq!(render("{{with .Config}}{{.Env}}{{end}}", &d), "[A=1]");
        assert_eq!(render("{{with .Nothing}}x{{else}}nothing{{end}}", &d), "nothing");
        assert_eq!(render("{{$x := .Id}}{{range .RepoTags}}{{$x}} {{end}}", &d), "sha256:abc sha256:abc ");
        assert_eq!(render("{{range .RepoTags}}{{$.Id}}{{end}}", &d), "sha256:abcsha256:abc");
        assert_eq!(render(r#"{{if eq .Id "x" "sha256:abc"}}eq{{end}}{{if ne .Size 1}}ne{{end}}"#, &d), "eqne");
        assert_eq!(render("{{and .Yes .Id}} {{or .Nothing .Size}}", &d), "sha256:abc 1234567");
        assert_eq!(render("a  {{- /* note */ -}}  b {{- .Id -}} \n c", &d), "absha256:abcc");
    }

    #[test]
    fn errors_name_the_problem() {
        let parse_err = |t: &str| Template::parse(t).unwrap_err().to_string();
        assert!(parse_err("{{.Id").contains("unclosed action"), "{}", parse_err("{{.Id"));
        assert!(parse_err("{{if .Id}}x").contains("has no {{end}}"));
        assert!(parse_err("{{end}}").contains("unexpected {{end}}"));
        assert!(parse_err("{{\"abc}}").contains("unterminated"));
        assert!(parse_err("{{}}").contains("missing value"));
        assert!(parse_err("{{template \"x\"}}").contains("not supported"));
        let run_err = |t: &str| Template::parse(t).unwrap().render(&data()).unwrap_err().to_string();
        assert!(run_err("{{nosuch .Id}}").contains(r#"function "nosuch" not defined"#));
        assert!(run_err("{{.Id.Foo}}").contains("can't evaluate field Foo in type string"));
        assert!(run_err("{{index .RepoTags 5}}").contains("out of range"));
        assert!(run_err("{{.Id 1}}").contains("non-function"));
        let strict = Template::parse("{{.Nope}}").unwrap().missing_key_error();
        assert!(strict.render(&json!({"ID": 1})).unwrap_err().to_string().contains(r#"no field "Nope""#));
        assert!(run_err("{{$nope}}").contains("undefined variable"));
    }

    #[test]
    fn hostile_templates_fail_with_an_error_instead_of_exhausting_the_machine() {
        let run_err = |t: &str| Template::parse(t).unwrap().render(&data()).unwrap_err().to_string();
        assert!(run_err("{{pad .Id 99999999999 0}}").contains("pad: result longer than 16 MiB"));
        assert!(run_err("{{pad .Id 9223372036854775807 9223372036854775807}}").contains("longer than"));
        assert!(run_err("{{range 1000000000000}}{{end}}").contains("evaluation stopped after"));
        assert!(run_err("{{range 100000}}{{range 100000}}{{end}}{{end}}").contains("evaluation stopped after"));
        assert!(run_err(r#"{{$x := "ab"}}{{range 64}}{{$x = print $x $x}}{{end}}"#).contains("longer than"));
        assert!(run_err(r#"{{$x := "ab"}}{{range 64}}{{$x = printf "%s%s" $x $x}}{{end}}"#).contains("longer than"));
        let long_join = r#"{{$x := "ab"}}{{range 20}}{{$x = print $x $x}}{{end}}{{join (split $x "") $x}}"#;
        assert!(run_err(long_join).contains("longer than"));
        assert!(run_err(r#"{{range 2000000}}x{{end}}"#).contains("stopped after"));
        // A small range still works.
        assert_eq!(render("{{range 3}}{{.}}{{end}}", &data()), "012");
        assert_eq!(render("{{range $i, $e := 2}}{{$i}}{{$e}};{{end}}", &data()), "00;11;");
        let parse_err = |t: &str| Template::parse(t).unwrap_err().to_string();
        let deep_parens = format!("{{{{{}1{}}}}}", "(".repeat(50_000), ")".repeat(50_000));
        assert!(parse_err(&deep_parens).contains("nested more than 100 levels"));
        let deep_blocks = format!("{}{}", "{{if 1}}".repeat(50_000), "{{end}}".repeat(50_000));
        assert!(parse_err(&deep_blocks).contains("nested more than 100 levels"));
        // 100 levels are fine.
        let ok = format!("{}x{}", "{{if 1}}".repeat(100), "{{end}}".repeat(100));
        assert_eq!(render(&ok, &data()), "x");
        // Many columns cost no stack.
        let cols = "a\t".repeat(200_000);
        assert_eq!(align_table(&format!("{cols}\n")).len(), 200_000 * 10 + 1);
    }

    #[test]
    fn header_rendering_passes_functions_through() {
        let t = Template::parse("{{.ID}}\t{{json .Size}}\t{{upper .Tag}}").unwrap();
        let titles = json!({"ID": "IMAGE ID", "Size": "SIZE", "Tag": "TAG"});
        assert_eq!(t.render_header(&titles).unwrap(), "IMAGE ID\tSIZE\tTAG");
    }

    #[test]
    fn table_alignment_matches_docker() {
        let text = "REPOSITORY\tTAG\tIMAGE ID\nalpine\tlatest\t0123456789ab\nlocalhost:5000/some/long/name\t1\tx\n";
        let want = "REPOSITORY                      TAG       IMAGE ID\n\
                    alpine                          latest    0123456789ab\n\
                    localhost:5000/some/long/name   1         x\n";
        assert_eq!(align_table(text), want);
        // No tabs: unchanged.
        assert_eq!(align_table("a\nb\n"), "a\nb\n");
        // A trailing tab pads the last cell too.
        assert_eq!(align_table("a\tb\t\n"), "a         b         \n");
    }

    /// Widths are counted in characters (Go's runes), not in terminal columns: the
    /// expected texts are what Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`
    /// (docker's) wrote for these inputs. The `tabwriter` crate counts display width
    /// (2 for CJK and emoji, 0 for combining marks and controls) and differs on
    /// every case but the ragged one.
    #[test]
    fn table_alignment_counts_characters_as_go_does() {
        let cases = [
            ("NAME\tTAG\n日本語のイメージ\tv1\nalpine\t最新\n", "NAME       TAG\n日本語のイメージ   v1\nalpine     最新\n"),
            ("NAME\tSIZE\ncafé\t1MB\ncafe\u{301}\t2MB\n", "NAME      SIZE\ncafé      1MB\ncafe\u{301}     2MB\n"),
            ("EMOJI\tX\n🐳🐳\ty\nab\tz\n", "EMOJI     X\n🐳🐳        y\nab        z\n"),
            ("ctl\tv\na\rb\tw\n", "ctl       v\na\rb       w\n"),
            (
                "a\tb\tc\nxxxxxxxxxxxxxxxxxx\ty\nno tabs here\nq\tr\ts\tt\n",
                "a                    b         c\nxxxxxxxxxxxxxxxxxx   y\nno tabs here\nq         r         s         t\n",
            ),
            ("\t\t\n\tx\n", "                    \n          x\n"),
            ("A\tB\nlast line without newline\tz", "A                           B\nlast line without newline   z"),
            ("x\ty\n\nx\ty\n", "x         y\n\nx         y\n"),
            ("exactly7\tb\nexactly10c\tc\n", "exactly7     b\nexactly10c   c\n"),
        ];
        for (text, want) in cases {
            assert_eq!(align_table(text), want, "{text:?}");
        }
    }
}
