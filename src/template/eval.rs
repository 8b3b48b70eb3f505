//! The template's evaluator: walks the parsed tree over a `serde_json::Value`, with
//! dot, variables and their scopes, pipelines and ranges, counting its steps against
//! `MAX_STEPS` and its output against `MAX_TEXT`.

use super::error::{check_len, Error, MAX_STEPS, MAX_TEXT};
use super::functions::{self, truthy};
use super::go_fmt::{go_print, type_name};
use super::parse::{Command, Node, Operand, Pipeline};
use serde_json::Value;

/// Render `nodes` over `data`; `header` renders a table's header row (see
/// `Template::render_header`).
pub(super) fn run(nodes: &[Node], data: &Value, missing_key_error: bool, header: bool) -> Result<String, Error> {
    let mut st =
        State { vars: vec![("$".to_string(), data.clone())], out: String::new(), missing_key_error, header, steps: 0 };
    st.walk(nodes, data)?;
    Ok(st.out)
}

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
            return functions::call(name, args, self.header).and_then(capped);
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
            Operand::Func(name) => functions::call(name, Vec::new(), self.header).and_then(capped),
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
