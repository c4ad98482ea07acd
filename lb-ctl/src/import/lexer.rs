//! keepalived.conf's block syntax, read into a tree of [`Item`]s that keep their file and line.
//!
//! A line is a keyword and its words; `{` (at the end of the line or alone on the next) opens
//! the keyword's block, `}` closes it. `!` and `#` start a comment (outside quotes); a quoted
//! string is one word. `include PATTERN` (a glob in the last component, relative to the
//! including file's folder) splices the matching files in, sorted, at that place; their words
//! keep their own file name and line. keepalived's `@NAME` conditional lines and `$NAME`
//! variables are left out and reported as [`Note`]s, as is an include that matches nothing.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{Kind, Note};

/// Where a word was read: the file's name as the user gave it (or as an include made it) and
/// its 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    pub file: Rc<str>,
    pub line: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One word of a line (quotes taken off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub pos: Pos,
}

/// A keyword with the words after it on its line, and its block if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: Word,
    pub args: Vec<Word>,
    pub block: Option<Vec<Item>>,
}

impl Item {
    pub fn pos(&self) -> &Pos {
        &self.key.pos
    }

    /// The first argument's text.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(|w| w.text.as_str())
    }

    /// The block's items (none without a block).
    pub fn children(&self) -> &[Item] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A file that cannot be read as keepalived.conf: nothing is imported.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseError {
    /// None when the top-level file itself cannot be read.
    pub pos: Option<Pos>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ParseError {}

/// Include depth, as keepalived's own limit.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Files of at most this size are read (a keepalived.conf is a few kB).
const MAX_FILE_BYTES: u64 = 4 << 20;

#[derive(Debug)]
enum Tok {
    Word(Word),
    Open(Pos),
    Close(Pos),
    Eol,
}

/// Reads `path` (and what it includes) into items.
pub fn parse_file(path: &Path) -> Result<(Vec<Item>, Vec<Note>), ParseError> {
    let mut toks = Vec::new();
    let mut skipped = Vec::new();
    lex_file(path, None, 0, &mut toks, &mut skipped)?;
    Ok((parse_tokens(&toks)?, skipped))
}

/// Reads `text` as the file `name` (includes relative to `dir`) into items.
pub fn parse_text(
    text: &str,
    name: &str,
    dir: &Path,
) -> Result<(Vec<Item>, Vec<Note>), ParseError> {
    let mut toks = Vec::new();
    let mut skipped = Vec::new();
    lex_text(text, name.into(), dir, 0, &mut toks, &mut skipped)?;
    Ok((parse_tokens(&toks)?, skipped))
}

fn lex_file(
    path: &Path,
    from: Option<&Pos>,
    depth: usize,
    toks: &mut Vec<Tok>,
    skipped: &mut Vec<Note>,
) -> Result<(), ParseError> {
    let fail = |message: String| ParseError {
        pos: from.cloned(),
        message,
    };
    let meta = fs::metadata(path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", path.display())));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "{} is {} bytes, more than the {MAX_FILE_BYTES} a configuration may have",
            path.display(),
            meta.len()
        )));
    }
    let text =
        fs::read_to_string(path).map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name: Rc<str> = path.display().to_string().into();
    lex_text(&text, name, dir, depth, toks, skipped)
}

fn lex_text(
    text: &str,
    file: Rc<str>,
    dir: &Path,
    depth: usize,
    toks: &mut Vec<Tok>,
    skipped: &mut Vec<Note>,
) -> Result<(), ParseError> {
    for (i, raw) in text.lines().enumerate() {
        let pos = Pos {
            file: file.clone(),
            line: i + 1,
        };
        let words = split_line(raw, &pos)?;
        let Some((first, quoted_first)) = words.first().map(|(w, q)| (w.as_str(), *q)) else {
            continue;
        };
        if !quoted_first && first.starts_with('@') {
            skipped.push(Note {
                pos,
                what: format!("conditional line `{first}`"),
                kind: Kind::NotSupported,
                why: "keepalived's `@NAME` lines depend on its `-i` option; the line is left \
                      out (write the variant you run)"
                    .into(),
            });
            continue;
        }
        if let Some((w, _)) = words.iter().find(|(w, q)| !q && w.starts_with('$')) {
            skipped.push(Note {
                pos,
                what: format!("variable `{w}`"),
                kind: Kind::NotSupported,
                why: "keepalived's `$NAME` definitions and substitutions; the line is left \
                      out (write the value itself)"
                    .into(),
            });
            continue;
        }
        if first == "include" && !quoted_first {
            let Some((pattern, _)) = words.get(1) else {
                return Err(ParseError {
                    pos: Some(pos),
                    message: "include: which file? (`include FILE` or a glob)".into(),
                });
            };
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(ParseError {
                    pos: Some(pos),
                    message: format!(
                        "include {pattern}: more than {MAX_INCLUDE_DEPTH} levels of include (a loop?)"
                    ),
                });
            }
            let files = expand(dir, pattern).map_err(|message| ParseError {
                pos: Some(pos.clone()),
                message: format!("include {pattern}: {message}"),
            })?;
            if files.is_empty() {
                skipped.push(Note {
                    pos: pos.clone(),
                    what: format!("include {pattern}"),
                    kind: Kind::NotNeeded,
                    why: "no file matches".into(),
                });
            }
            for f in files {
                lex_file(&f, Some(&pos), depth + 1, toks, skipped)?;
                toks.push(Tok::Eol);
            }
            continue;
        }
        for (w, quoted) in words {
            toks.push(match (w.as_str(), quoted) {
                ("{", false) => Tok::Open(pos.clone()),
                ("}", false) => Tok::Close(pos.clone()),
                _ => Tok::Word(Word {
                    text: w,
                    pos: pos.clone(),
                }),
            });
        }
        toks.push(Tok::Eol);
    }
    Ok(())
}

/// The words of one line, each with whether it was quoted; `{` and `}` are words of their
/// own; a comment ends the line.
fn split_line(line: &str, pos: &Pos) -> Result<Vec<(String, bool)>, ParseError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<(String, bool)>| {
        if !cur.is_empty() {
            out.push((std::mem::take(cur), false));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '!' | '#' if cur.is_empty() => break,
            '"' if cur.is_empty() => {
                let mut s = String::new();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    s.push(c);
                }
                if !closed {
                    return Err(ParseError {
                        pos: Some(pos.clone()),
                        message: "a quoted string has no closing `\"`".into(),
                    });
                }
                out.push((s, true));
            }
            '{' | '}' => {
                flush(&mut cur, &mut out);
                out.push((c.to_string(), false));
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    Ok(out)
}

/// The files `pattern` names, relative to `dir`: a plain path, or `*`, `?` and `[...]` in
/// its last component (sorted).
fn expand(dir: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        dir.join(pattern)
    };
    let wild = |s: &str| s.contains(['*', '?', '[']);
    let Some(last) = full.file_name().and_then(|s| s.to_str()) else {
        return Err("not a file name".into());
    };
    let parent = full.parent().unwrap_or(Path::new("."));
    if wild(&parent.display().to_string()) {
        return Err("wildcards are supported in the file name only, not in folders".into());
    }
    if !wild(last) {
        return Ok(vec![full]);
    }
    let entries = match fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", parent.display())),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| glob_match(last.as_bytes(), n.as_bytes()))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    Ok(out)
}

/// Shell-style matching of one name: `*`, `?`, `[abc]`, `[a-z]`, `[!a]`; a leading `.` must be
/// matched literally.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pat.first() != Some(&b'.') {
        return false;
    }
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some(b'[') => {
                let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                    return n.first() == Some(&b'[') && go(&p[1..], &n[1..]);
                };
                let Some(&c) = n.first() else { return false };
                let mut set = &p[1..end];
                let negate = matches!(set.first(), Some(b'!' | b'^'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == b'-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[end + 1..], &n[1..])
            }
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    go(pat, name)
}

fn parse_tokens(toks: &[Tok]) -> Result<Vec<Item>, ParseError> {
    let mut i = 0;
    let items = items(toks, &mut i, None)?;
    Ok(items)
}

/// The items up to the `}` that closes the block opened at `open` (the end, at the top).
fn items(toks: &[Tok], i: &mut usize, open: Option<&Pos>) -> Result<Vec<Item>, ParseError> {
    let mut out = Vec::new();
    loop {
        match toks.get(*i) {
            None => {
                return match open {
                    None => Ok(out),
                    Some(p) => Err(ParseError {
                        pos: Some(p.clone()),
                        message: "this block is never closed: a `}` is missing".into(),
                    }),
                };
            }
            Some(Tok::Eol) => *i += 1,
            Some(Tok::Close(p)) => {
                *i += 1;
                return match open {
                    Some(_) => Ok(out),
                    None => Err(ParseError {
                        pos: Some(p.clone()),
                        message: "a `}` without its `{`".into(),
                    }),
                };
            }
            Some(Tok::Open(p)) => {
                return Err(ParseError {
                    pos: Some(p.clone()),
                    message: "a `{` without a keyword before it".into(),
                });
            }
            Some(Tok::Word(key)) => {
                *i += 1;
                let mut args = Vec::new();
                while let Some(Tok::Word(w)) = toks.get(*i) {
                    args.push(w.clone());
                    *i += 1;
                }
                // `{` on this line, or alone on a later one.
                let mut j = *i;
                while matches!(toks.get(j), Some(Tok::Eol)) {
                    j += 1;
                }
                let block = match toks.get(j) {
                    Some(Tok::Open(p)) => {
                        *i = j + 1;
                        Some(items(toks, i, Some(p))?)
                    }
                    _ => None,
                };
                out.push(Item {
                    key: key.clone(),
                    args,
                    block,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(Vec<Item>, Vec<Note>), ParseError> {
        parse_text(text, "k.conf", Path::new("/nonexistent"))
    }

    #[test]
    fn blocks_words_quotes_comments_and_lines() {
        let (items, skipped) = parse(
            "! a comment\nvirtual_server 10.0.0.1 80 {   # trailing\n  lb_algo rr\n  \
             real_server 10.0.0.2 80\n  {\n    MISC_CHECK { misc_path \"/bin/chk a#b\" }\n  }\n}\n",
        )
        .unwrap();
        assert!(skipped.is_empty());
        assert_eq!(items.len(), 1);
        let vs = &items[0];
        assert_eq!(vs.key.text, "virtual_server");
        assert_eq!(
            (vs.arg(0), vs.arg(1), vs.pos().line),
            (Some("10.0.0.1"), Some("80"), 2)
        );
        let kids = vs.children();
        assert_eq!(kids[0].key.text, "lb_algo");
        assert_eq!(kids[0].pos().line, 3);
        let rs = &kids[1];
        assert_eq!((rs.key.text.as_str(), rs.pos().line), ("real_server", 4));
        let misc = &rs.children()[0];
        assert_eq!(misc.pos().line, 6);
        let path = &misc.children()[0];
        assert_eq!(path.arg(0), Some("/bin/chk a#b"));
    }

    #[test]
    fn errors_name_their_line() {
        let e = parse("a {\n  b 1\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.conf:1: this block is never closed: a `}` is missing"
        );
        let e = parse("a {\n}\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "k.conf:3: a `}` without its `{`");
        let e = parse("a\nb \"open\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "k.conf:2: a quoted string has no closing `\"`"
        );
        let e = parse("{\n}\n").unwrap_err();
        assert_eq!(e.to_string(), "k.conf:1: a `{` without a keyword before it");
    }

    #[test]
    fn conditional_lines_and_variables_are_left_out_and_named() {
        let (items, skipped) = parse(
            "@high priority 170\n$X=1\nvrrp_instance I {\n  priority $X\n  advert_int 1\n}\n",
        )
        .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].children().len(), 1);
        let lines: Vec<(usize, &str)> = skipped
            .iter()
            .map(|s| (s.pos.line, s.what.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (1, "conditional line `@high`"),
                (2, "variable `$X=1`"),
                (4, "variable `$X`")
            ]
        );
    }

    #[test]
    fn includes_splice_files_with_their_own_names_and_lines() {
        let dir = std::env::temp_dir().join(format!("lb-import-lexer-{}", std::process::id()));
        let sub = dir.join("conf.d");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("b.conf"), "\n\nvrrp_script b {\n  script x\n}\n").unwrap();
        fs::write(sub.join("a.conf"), "vrrp_script a {\n  script y\n}\n").unwrap();
        fs::write(sub.join("skip.txt"), "broken {\n").unwrap();
        let main = dir.join("keepalived.conf");
        fs::write(
            &main,
            "global_defs {\n}\ninclude conf.d/*.conf\ninclude none/*.conf\n",
        )
        .unwrap();
        let (items, skipped) = parse_file(&main).unwrap();
        let names: Vec<(String, usize, String)> = items
            .iter()
            .map(|i| {
                let file = i.pos().file.rsplit('/').next().unwrap_or("").to_string();
                (file, i.pos().line, i.arg(0).unwrap_or("").to_string())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("keepalived.conf".into(), 1, "".into()),
                ("a.conf".into(), 1, "a".into()),
                ("b.conf".into(), 3, "b".into()),
            ]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].pos.line, 4);
        // A loop is an error, not a stack overflow.
        fs::write(sub.join("a.conf"), "include a.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err();
        assert!(e.message.contains("levels of include"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn glob_matching() {
        assert!(glob_match(b"*.conf", b"a.conf"));
        assert!(!glob_match(b"*.conf", b".a.conf"));
        assert!(glob_match(b"vs[0-9]?.conf", b"vs1x.conf"));
        assert!(!glob_match(b"vs[!0-9].conf", b"vs1.conf"));
    }
}
