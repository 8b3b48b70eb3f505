//! Docker's table writer for `table` formats: Go's `tabwriter` as docker configures it,
//! with widths counted in characters as Go counts them.

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
