//! The template's parser: turns the lexer's items into the tree the evaluator walks
//! (text, actions, and `if`/`range`/`with` blocks with their `else` branches), each
//! action a pipeline of commands. Nesting is bounded before the recursive descent runs.

use super::error::{Error, MAX_NESTING};
use super::lex::{Item, Tok};
use serde_json::Value;

#[derive(Debug)]
pub(super) enum Node {
    Text(String),
    Action(Pipeline),
    If { cond: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { over: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    With { value: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug)]
pub(super) struct Pipeline {
    /// `$a := …` or `$i, $e := …` (range).
    pub(super) vars: Vec<String>,
    /// `:=` declares; `=` assigns to an existing variable.
    pub(super) declare: bool,
    pub(super) commands: Vec<Command>,
}

#[derive(Debug)]
pub(super) struct Command {
    pub(super) operands: Vec<Operand>,
}

#[derive(Debug)]
pub(super) enum Operand {
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

/// The whole template: its nodes, or why it is not one we can run.
pub(super) fn parse(items: &[Item]) -> Result<Vec<Node>, Error> {
    check_nesting(items)?;
    let mut pos = 0;
    let (nodes, end) = parse_list(items, &mut pos)?;
    match end {
        ListEnd::Eof => Ok(nodes),
        ListEnd::End => Err(Error::Parse("unexpected {{end}}".into())),
        ListEnd::Else(_) => Err(Error::Parse("unexpected {{else}}".into())),
    }
}

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
