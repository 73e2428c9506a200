//! SQL text for spans: literals masked, and the operation and main table picked out.
//!
//! Written by hand rather than with a SQL parser crate because the text we see is often cut
//! by the capture cap, mixes dialects (PostgreSQL, MySQL) and must never be rejected: a lexer
//! that only knows strings, numbers, comments and identifiers handles all of that, in one pass,
//! and never fails.

use smol_str::SmolStr;

/// Which quoting rules apply: MySQL treats `"..."` as a string, PostgreSQL as an identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Mysql,
}

/// Longest query text put on a span.
const MAX_TEXT: usize = 2048;

/// `sql` with every literal (strings, numbers, hex/bit strings, dollar-quoted bodies)
/// replaced by `?`, comments removed, whitespace collapsed, and `IN (?, ?, ...)` lists
/// collapsed to `IN (?)` so that the text has low cardinality. Placeholders (`$1`, `?`,
/// `%s`) are kept.
pub fn mask_literals(sql: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(sql.len().min(MAX_TEXT));
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < MAX_TEXT {
        let c = b[i];
        match c {
            b'\'' => {
                i = skip_quoted(b, i + 1, b'\'', dialect == Dialect::Mysql);
                push_literal(&mut out);
            }
            b'"' if dialect == Dialect::Mysql => {
                i = skip_quoted(b, i + 1, b'"', true);
                push_literal(&mut out);
            }
            b'"' | b'`' => {
                let end = skip_quoted(b, i + 1, c, false);
                out.push_str(&sql[i..end]);
                i = end;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_line(b, i),
            b'#' if dialect == Dialect::Mysql => i = skip_line(b, i),
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
                push_space(&mut out);
            }
            b'$' if dialect == Dialect::Postgres => {
                let tag_len = b[i + 1..].iter().take_while(|x| x.is_ascii_alphanumeric() || **x == b'_').count();
                let is_param = tag_len > 0 && b[i + 1..i + 1 + tag_len].iter().all(u8::is_ascii_digit);
                if !is_param && b.get(i + 1 + tag_len) == Some(&b'$') {
                    // Dollar quoting: $tag$ ... $tag$
                    let tag = &sql[i..i + tag_len + 2];
                    let body = i + tag.len();
                    i = sql[body..].find(tag).map_or(b.len(), |p| body + p + tag.len());
                    push_literal(&mut out);
                } else {
                    out.push('$');
                    out.push_str(&sql[i + 1..i + 1 + tag_len]);
                    i += 1 + tag_len;
                }
            }
            b'0'..=b'9' | b'.' if b.get(i + 1).is_some_and(u8::is_ascii_digit) || c != b'.' => {
                if prev_is_word(&out) {
                    // Part of an identifier such as `t1`.
                    out.push(c as char);
                    i += 1;
                } else {
                    i = skip_number(b, i);
                    push_literal(&mut out);
                }
            }
            b'x' | b'X' | b'b' | b'B' | b'e' | b'E' | b'n' | b'N' if b.get(i + 1) == Some(&b'\'') && !prev_is_word(&out) => {
                i = skip_quoted(b, i + 2, b'\'', true);
                push_literal(&mut out);
            }
            c if c.is_ascii_whitespace() => {
                push_space(&mut out);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                // A word (keyword or identifier) in one copy: its letters, digits and
                // underscores are copied as they are whichever branch would see them, since a
                // digit after a word character is part of it and a literal's `x'` prefix
                // needs no word character before it.
                let run = b[i..].iter().take_while(|x| x.is_ascii_alphanumeric() || **x == b'_').count();
                let end = i + run.min(MAX_TEXT - out.len());
                out.push_str(&sql[i..end]);
                i = end;
            }
            _ => {
                // Copy one UTF-8 character.
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    collapse_in_lists(out.trim().trim_end_matches(';').trim_end())
}

fn push_literal(out: &mut String) {
    out.push('?');
}

fn push_space(out: &mut String) {
    if !out.is_empty() && !out.ends_with(' ') {
        out.push(' ');
    }
}

fn prev_is_word(out: &str) -> bool {
    out.as_bytes().last().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
}

/// Index after the closing quote (or the end of input for a quote cut by the capture cap).
/// A doubled quote is an escaped quote; with `backslash`, `\x` escapes too.
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash: bool) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' if backslash => i += 2,
            q if q == quote => {
                if b.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    b.len()
}

fn skip_line(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|c| *c == b'\n').map_or(b.len(), |p| i + p + 1)
}

fn skip_number(b: &[u8], mut i: usize) -> usize {
    if b[i..].starts_with(b"0x") || b[i..].starts_with(b"0X") {
        i += 2;
        while i < b.len() && b[i].is_ascii_hexdigit() {
            i += 1;
        }
        return i;
    }
    while i < b.len() {
        match b[i] {
            b'0'..=b'9' | b'.' => i += 1,
            b'e' | b'E' if b.get(i + 1).is_some_and(|c| c.is_ascii_digit() || *c == b'-' || *c == b'+') => i += 2,
            _ => break,
        }
    }
    i
}

/// `IN (?, ?, ?)` → `IN (?)`.
fn collapse_in_lists(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(p) = find_ci(rest, "in (?") {
        let after = p + "in (?".len();
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        let skipped = tail.len() - tail.trim_start_matches([',', ' ', '?']).len();
        rest = &tail[skipped..];
    }
    out.push_str(rest);
    out
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.as_bytes().windows(needle.len()).position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The operation (`SELECT`) and, best effort, the table it is about (`users`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub operation: Option<SmolStr>,
    pub collection: Option<SmolStr>,
}

/// Words that can start a statement and name its operation.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "UPSERT",
    "REPLACE",
    "CREATE",
    "DROP",
    "ALTER",
    "TRUNCATE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "EXPLAIN",
    "ANALYZE",
    "VACUUM",
    "COPY",
    "CALL",
    "EXECUTE",
    "PREPARE",
    "DEALLOCATE",
    "GRANT",
    "REVOKE",
    "LOCK",
    "USE",
    "DESCRIBE",
    "WITH",
    "VALUES",
    "LISTEN",
    "NOTIFY",
    "DO",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "DISCARD",
    "RESET",
];

pub fn summarize(sql: &str) -> Summary {
    // Runs for every statement: the words live on the stack, the operation is one of ours.
    let mut buf = [""; 64];
    let mut n = 0;
    for (slot, word) in buf.iter_mut().zip(sql_words(sql)) {
        *slot = word;
        n += 1;
    }
    let words = &buf[..n];
    let Some(first) = words.first() else { return Summary::default() };
    let Some(op) = operation(first) else { return Summary::default() };
    // `WITH x AS (...) SELECT ...`: the operation is the statement after the CTEs.
    let (op, words) = if op == "WITH" {
        match words.iter().rposition(|w| ["SELECT", "INSERT", "UPDATE", "DELETE"].iter().any(|k| w.eq_ignore_ascii_case(k))) {
            Some(p) => (operation(words[p]).unwrap_or(op), &words[p..]),
            None => (op, words),
        }
    } else {
        (op, words)
    };
    let after = |kw: &str| words.iter().position(|w| w.eq_ignore_ascii_case(kw)).and_then(|p| table_after(&words[p + 1..]));
    let collection = match op {
        "SELECT" | "DELETE" => after("FROM"),
        "INSERT" | "REPLACE" | "MERGE" => after("INTO"),
        "UPDATE" => table_after(&words[1..]),
        "CREATE" | "DROP" | "ALTER" | "TRUNCATE" | "LOCK" => after("TABLE").or_else(|| if op == "TRUNCATE" { table_after(&words[1..]) } else { None }),
        "COPY" => table_after(&words[1..]),
        _ => None,
    };
    Summary { operation: Some(SmolStr::new_static(op)), collection }
}

/// The operation a word names, as we spell it (upper case).
fn operation(word: &str) -> Option<&'static str> {
    OPERATIONS.iter().find(|k| word.eq_ignore_ascii_case(k)).copied()
}

/// The first word that names a table, skipping modifiers such as `ONLY` or `IF NOT EXISTS`.
fn table_after(words: &[&str]) -> Option<SmolStr> {
    const SKIP: &[&str] = &["ONLY", "IF", "NOT", "EXISTS", "LOW_PRIORITY", "IGNORE", "QUICK", "DELAYED", "HIGH_PRIORITY", "TABLE"];
    let word = words.iter().find(|w| !SKIP.iter().any(|s| w.eq_ignore_ascii_case(s)))?;
    let name = word.trim_matches(['"', '`']);
    let valid = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '"' | '`' | '$'));
    let keyword = OPERATIONS.iter().any(|k| name.eq_ignore_ascii_case(k));
    let unquoted = || if name.contains(['"', '`']) { SmolStr::new(name.replace(['"', '`'], "")) } else { SmolStr::new(name) };
    (valid && !keyword && !word.starts_with('?')).then(unquoted)
}

/// Words of a statement: identifiers (quoted ones whole) and keywords; punctuation splits.
fn sql_words(sql: &str) -> impl Iterator<Item = &str> {
    sql.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ',' | ';' | '=' | '<' | '>' | '*')).filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(s: &str) -> String {
        mask_literals(s, Dialect::Postgres)
    }

    #[test]
    fn masks_every_kind_of_literal() {
        assert_eq!(pg("SELECT * FROM users WHERE name = 'O''Brien' AND age > 42"), "SELECT * FROM users WHERE name = ? AND age > ?");
        assert_eq!(pg("select 1.5e3, -7, x'ff', E'a\\'b', $$body$$, $f$x$f$ from t1"), "select ?, -?, ?, ?, ?, ? from t1");
        assert_eq!(pg("UPDATE t SET v = $1 WHERE id = $2"), "UPDATE t SET v = $1 WHERE id = $2");
        assert_eq!(pg("SELECT \"Weird Col\" FROM t -- secret 'x'\n WHERE a = 1 /* 'y' */"), "SELECT \"Weird Col\" FROM t WHERE a = ?");
        assert_eq!(pg("SELECT * FROM t WHERE id IN (1, 2, 3, 4);"), "SELECT * FROM t WHERE id IN (?)");
        assert_eq!(mask_literals("SELECT \"secret\", `col` FROM t WHERE c = 0x1F # note", Dialect::Mysql), "SELECT ?, `col` FROM t WHERE c = ?");
        assert_eq!(mask_literals("INSERT INTO t VALUES ('a\\'b', %s)", Dialect::Mysql), "INSERT INTO t VALUES (?, %s)");
    }

    /// Words are copied whole (a fast path): what ends them, and what starts a literal right
    /// after one, is what it was character by character.
    #[test]
    fn words_are_copied_whole_and_the_text_still_stops_at_its_limit() {
        assert_eq!(pg("SELECT ax'41', t_2x, 3abc FROM tab1 WHERE n'x' = b'01' AND t1.c2 = 7"), "SELECT ax?, t_2x, ?abc FROM tab1 WHERE ? = ? AND t1.c2 = ?");
        assert_eq!(pg(&"a".repeat(3000)).len(), MAX_TEXT);
        assert_eq!(pg(&format!("SELECT {} FROM t", "c".repeat(3000))), format!("SELECT {}", "c".repeat(MAX_TEXT - 7)));
    }

    #[test]
    fn cut_text_never_leaks_the_literal_tail() {
        assert_eq!(pg("SELECT * FROM t WHERE password = 'hunter"), "SELECT * FROM t WHERE password = ?");
        assert_eq!(pg("SELECT $tag$ never closed"), "SELECT ?");
    }

    #[test]
    fn summaries() {
        let s = |q| {
            let Summary { operation, collection } = summarize(q);
            format!("{} {}", operation.unwrap_or_default(), collection.unwrap_or_default())
        };
        assert_eq!(s("select id from public.users where x = 1"), "SELECT public.users");
        assert_eq!(s("INSERT INTO \"Orders\" (a) VALUES (1)"), "INSERT Orders");
        assert_eq!(s("update accounts set a=1"), "UPDATE accounts");
        assert_eq!(s("DELETE FROM `t`"), "DELETE t");
        assert_eq!(s("CREATE TABLE IF NOT EXISTS items (id int)"), "CREATE items");
        assert_eq!(s("WITH x AS (SELECT 1) SELECT * FROM x"), "SELECT x");
        assert_eq!(s("SELECT 1"), "SELECT ");
        assert_eq!(s("SELECT * FROM (SELECT 1) s"), "SELECT ");
        assert_eq!(s("BEGIN"), "BEGIN ");
        assert_eq!(s("hello world"), " ");
    }
}
