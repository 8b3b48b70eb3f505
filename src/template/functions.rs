//! The functions a template pipeline calls: Go's (`index`, `len`, `print`, `printf`,
//! `println`, `not`, `and`, `or`, `eq`, `ne`) and docker's (`json`, `join`, `split`,
//! `lower`, `upper`, `title`, `truncate`, `pad`), each bounded by `MAX_TEXT`.

use super::error::{check_len, Error};
use super::go_fmt::{go_print, go_print_inner, sprint, sprintf, type_name};
use serde_json::Value;

/// Call the function `name` (the last argument is the piped value, if any). `header`:
/// rendering a table's header row.
pub(super) fn call(name: &str, args: Vec<Value>, header: bool) -> Result<Value, Error> {
    let want = |n: usize| -> Result<(), Error> {
        if args.len() == n {
            Ok(())
        } else {
            Err(Error::Exec(format!("wrong number of args for {name}: want {n} got {}", args.len())))
        }
    };
    // Docker renders table headers with these functions turned into identities.
    if header && matches!(name, "json" | "split" | "join" | "title" | "lower" | "upper" | "truncate" | "pad") {
        return args.into_iter().next().ok_or_else(|| Error::Exec(format!("wrong number of args for {name}")));
    }
    match name {
        "json" => {
            want(1)?;
            Ok(Value::String(serde_json::to_string(&args[0])?))
        }
        "index" => {
            let mut it = args.into_iter();
            let mut cur =
                it.next().ok_or_else(|| Error::Exec("wrong number of args for index: want at least 1 got 0".into()))?;
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

/// Whether Go's templates take `v` as true: not empty, zero, false or missing.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}
