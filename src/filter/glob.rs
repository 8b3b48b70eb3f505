//! Go's `path.Match`, the glob docker matches `reference=` filters (and the
//! `REPO[:TAG]` argument of `images`) against familiar image names: `*` is any run of
//! characters but `/`, `?` one character but `/`, `[a-z]` and `[^a-z]` classes, `\`
//! escapes; a malformed pattern is an error, found before any matching.
//!
//! Why not `globset`: it is a different glob language, and the differences show on
//! image names. It reads `{a,b}` as alternatives (Go: literal braces), lets `**` cross
//! `/` (Go: `**` is `*`), negates a class with `[!…]` (Go: `!` is a member), takes `]`
//! first in a class as a member (Go: a malformed pattern) and does not read `\]` as
//! an escape inside a class. And it compiles a pattern into a regex: a long pattern of
//! stars (`*` repeated 100 000 times, which `ls --filter` must answer) overflows the
//! regex size limit and `compile_matcher` panics. Translating patterns to globset's
//! language would need this module's parser anyway, so the matcher stays ours: Go's
//! own algorithm, linear in pattern times name, with no recursion. The tests below pin
//! each of those differences.

/// What is wrong with a malformed pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("trailing backslash")]
    TrailingBackslash,
    #[error("malformed character class")]
    MalformedClass,
}

/// Check a pattern's syntax (Go's `path.Match` rules).
pub fn check(pattern: &str) -> Result<(), PatternError> {
    let p: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 == p.len() => return Err(PatternError::TrailingBackslash),
            '\\' => i += 2,
            '[' => i += 1 + CharClass::parse(&p[i + 1..]).ok_or(PatternError::MalformedClass)?.len,
            _ => i += 1,
        }
    }
    Ok(())
}

/// Go's `path.Match`: `*` is any run of characters other than `/`, `?` one character
/// other than `/`, `[a-z]` / `[^…]` a class, `\` escapes. A malformed pattern matches
/// nothing (patterns are checked by `check` first).
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob(&p, &n)
}

/// Go's `path.Match` algorithm: the pattern is a series of chunks, each after a run of
/// stars; a chunk is matched at the first place that works, never backtracked into,
/// so a pattern costs at most its length times the name's, whatever its stars (a
/// backtracking matcher takes exponential time on `*a*a*a*a…b`), and no recursion.
fn glob(mut p: &[char], mut n: &[char]) -> bool {
    'chunks: while !p.is_empty() {
        let star = p[0] == '*';
        while p.first() == Some(&'*') {
            p = &p[1..];
        }
        let chunk_len = chunk_end(p);
        let (chunk, after) = p.split_at(chunk_len);
        p = after;
        if star && chunk.is_empty() {
            // Trailing star: the rest of the name, if it has no '/'.
            return !n.contains(&'/');
        }
        // At the current position; the last chunk must also use up the name.
        if let Some(rest) = match_chunk(chunk, n) {
            if rest.is_empty() || !p.is_empty() {
                n = rest;
                continue;
            }
        }
        if star {
            // After skipping 1, 2, … characters, never a '/'.
            let mut i = 0;
            while i < n.len() && n[i] != '/' {
                if let Some(rest) = match_chunk(chunk, &n[i + 1..]) {
                    if rest.is_empty() || !p.is_empty() {
                        n = rest;
                        continue 'chunks;
                    }
                }
                i += 1;
            }
        }
        return false;
    }
    n.is_empty()
}

/// Where the chunk at the start of `p` ends: at the next unescaped `*` outside a class.
fn chunk_end(p: &[char]) -> usize {
    let mut in_class = false;
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => i += 1,
            '[' => in_class = true,
            ']' => in_class = false,
            '*' if !in_class => return i,
            _ => {}
        }
        i += 1;
    }
    p.len()
}

/// Match a star-free chunk at the start of `n`; what is left of `n` after it.
fn match_chunk<'a>(mut chunk: &[char], mut n: &'a [char]) -> Option<&'a [char]> {
    while let Some(&c) = chunk.first() {
        let &first = n.first()?;
        match c {
            '?' => {
                if first == '/' {
                    return None;
                }
                chunk = &chunk[1..];
            }
            '[' => {
                let class = CharClass::parse(&chunk[1..])?;
                if first == '/' || !class.matches(first) {
                    return None;
                }
                chunk = &chunk[1 + class.len..];
            }
            '\\' if chunk.len() > 1 => {
                if first != chunk[1] {
                    return None;
                }
                chunk = &chunk[2..];
            }
            _ => {
                if first != c {
                    return None;
                }
                chunk = &chunk[1..];
            }
        }
        n = &n[1..];
    }
    Some(n)
}

/// A `[…]` character class.
struct CharClass {
    negate: bool,
    ranges: Vec<(char, char)>,
    /// Pattern characters it takes after the `[`, its `]` included.
    len: usize,
}

impl CharClass {
    fn matches(&self, c: char) -> bool {
        self.ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != self.negate
    }

    /// Parse the class that starts after a `[`; None if it is malformed.
    fn parse(p: &[char]) -> Option<CharClass> {
        let mut i = 0;
        let negate = p.first() == Some(&'^');
        if negate {
            i = 1;
        }
        let mut ranges = Vec::new();
        let esc = |i: &mut usize| -> Option<char> {
            let mut c = *p.get(*i)?;
            if c == '-' || c == ']' {
                return None;
            }
            if c == '\\' {
                *i += 1;
                c = *p.get(*i)?;
            }
            *i += 1;
            Some(c)
        };
        loop {
            if p.get(i) == Some(&']') && !ranges.is_empty() {
                return Some(CharClass { negate, ranges, len: i + 1 });
            }
            let lo = esc(&mut i)?;
            let hi = if p.get(i) == Some(&'-') {
                i += 1;
                esc(&mut i)?
            } else {
                lo
            };
            if hi < lo {
                return None;
            }
            ranges.push((lo, hi));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_path_match() {
        assert!(matches("app*", "app"));
        assert!(matches("app*", "app:1"));
        assert!(matches("app*", "apple"));
        assert!(!matches("app*", "x/app"));
        assert!(matches("*/app:1", "127.0.0.1:5000/app:1"));
        assert!(!matches("*/app:1", "a/b/app:1"), "* does not cross /");
        assert!(matches("*/*/app", "a/b/app"));
        assert!(matches("app:?", "app:1"));
        assert!(!matches("app:?", "app:10"));
        assert!(matches("app:[0-9]", "app:7"));
        assert!(matches("app:[^0-9]", "app:x"));
        assert!(!matches("app:[^0-9]", "app:7"));
        assert!(matches(r"a\*", "a*"));
        assert!(!matches(r"a\*", "ab"));
        assert!(check("[").is_err());
        assert!(check("a[]").is_err());
        assert!(check("a[z-a]").is_err());
        assert!(check("a\\").is_err());
        assert!(check("*/app:[0-9]*").is_ok());
        assert!(matches("*", "app"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(matches("[a-c]*[0-9]", "b77"));
        assert!(matches("**", "ab"));
    }

    #[test]
    fn a_pattern_of_many_stars_takes_linear_time_and_no_stack() {
        // A backtracking matcher takes about 60^12 steps on this.
        let name = "a".repeat(60);
        assert!(!matches(&format!("{}b", "*a".repeat(12)), &name));
        assert!(matches(&format!("{}a", "*a".repeat(12)), &name));
        // One stack frame per star overflowed the stack; globset's regex panics.
        assert!(matches(&"*".repeat(1_000_000), "app"));
        assert!(!matches(&"?".repeat(1_000_000), "app"));
    }

    #[test]
    fn go_semantics_where_globset_differs() {
        // Braces are literal (globset: alternatives).
        assert!(matches("app:{1,2}", "app:{1,2}"));
        assert!(!matches("app:{1,2}", "app:1"));
        // `**` is two stars, neither crossing `/` (globset: any depth).
        assert!(!matches("**", "a/b"));
        assert!(!matches("a/**/b", "a/x/y/b"));
        assert!(matches("a/**/b", "a/x/b"));
        // `!` in a class is a member (globset: negation).
        assert!(matches("[!a]", "!"));
        assert!(!matches("[!a]", "b"));
        // `]` or `-` first in a class is malformed (globset: a member), and `\]` in a
        // class is an escaped `]` (globset: no match).
        assert_eq!(check("[]a]"), Err(PatternError::MalformedClass));
        assert_eq!(check("[-a]"), Err(PatternError::MalformedClass));
        assert!(matches(r"[\]]", "]"));
        assert_eq!(check(r"app\"), Err(PatternError::TrailingBackslash));
    }
}
