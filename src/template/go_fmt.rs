//! How Go's `fmt` prints a `serde_json::Value`, as a template's output and its
//! `print`/`printf` show it: `Print`'s forms (`[a b]`, `map[k:v]`, `<nil>`), `Sprint`'s
//! spacing, `Sprintf`'s verbs, flags, widths and precisions, and the type names Go uses
//! for a bad argument (`%!d(string=x)`).

use super::error::{check_len, Error};
use serde_json::{Map, Value};
use std::fmt::Write as _;

/// The name Go gives the type a value decodes to.
pub(super) fn type_name(v: &Value) -> &'static str {
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

/// How a template action prints a value: Go's `fmt.Print`, with a missing value
/// shown as `<no value>` at the top level.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        other => go_print_inner(other),
    }
}

pub(super) fn go_print_inner(v: &Value) -> String {
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
pub(super) fn sprint(args: &[Value]) -> Result<String, Error> {
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
pub(super) fn sprintf(fmt: &str, args: &[Value]) -> Result<String, Error> {
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
