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
//!
//! The engine is in parts, one idea to a file: `lex` cuts the text into text and
//! action tokens, `parse` builds the tree, `eval` walks it over the data, `functions`
//! are the functions a pipeline calls (docker's and Go's), `go_fmt` prints values as
//! Go's `fmt` does, `table` aligns the columns of a `table` format, and `error` holds
//! the error they share and the limits past which a template is one. This file holds
//! the public `Template` and `Format`.

mod error;
mod eval;
mod functions;
mod go_fmt;
mod lex;
mod parse;
mod table;
#[cfg(test)]
mod tests;

use error::MAX_TEXT;
use serde_json::Value;

pub use error::Error;
pub use go_fmt::go_print;
pub use table::align_table;

/// A parsed template.
#[derive(Debug)]
pub struct Template {
    nodes: Vec<parse::Node>,
    missing_key_error: bool,
}

impl Template {
    /// Parse `src`. A missing map key prints `<no value>`, as in Go by default.
    pub fn parse(src: &str) -> Result<Template, Error> {
        let nodes = parse::parse(&lex::lex(src)?)?;
        Ok(Template { nodes, missing_key_error: false })
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
        eval::run(&self.nodes, data, self.missing_key_error, header)
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
