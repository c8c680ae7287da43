//! RFC 822 tokens of address header fields, as qmail's `token822.c` reads and writes them.
//!
//! This module owns the lexical layer under qmail-inject's rewriting: [`parse`] splits a header
//! field (or an address) into atoms, quoted strings, domain literals, comments and specials;
//! [`addrlist`] walks an address list from right to left, as qmail does, handing each address to
//! a callback that may rewrite it; [`unparse`] writes tokens back, folding after commas at 80
//! columns; [`unquote`] gives the bare address that goes into the envelope.
//!
//! The behaviour is qmail's, quirks included, because qmail-inject's output must be reproduced
//! byte for byte: nested comment parentheses are dropped (`(a (b))` becomes `(a b)`), a backslash
//! escape inside an atom is taken literally, an atom holding control, 8-bit, `)`, `]` or `\`
//! characters becomes a quoted string, and `)` or `]` outside their brackets is a parse error.

use std::fmt;

/// The kind of a token (qmail's `TOKEN822_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A run of atom characters (`bob`, `example`); specials end it.
    Atom,
    /// A quoted string, stored without its quotes and escapes.
    Quote,
    /// A domain literal `[1.2.3.4]`, stored without brackets and escapes.
    Literal,
    /// A comment, stored without its outer parentheses; nested parentheses are dropped.
    Comment,
    /// `<`
    Left,
    /// `>`
    Right,
    /// `@`
    At,
    /// `,`
    Comma,
    /// `;`
    Semi,
    /// `:`
    Colon,
    /// `.`
    Dot,
}

/// One token: a kind and, for atoms, quoted strings, literals and comments, its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Token {
    /// What the token is.
    pub kind: Kind,
    /// The unescaped text (empty for the specials).
    pub text: Vec<u8>,
}

impl Token {
    /// A token with text.
    pub fn new(kind: Kind, text: impl Into<Vec<u8>>) -> Token {
        Token {
            kind,
            text: text.into(),
        }
    }

    /// A special (text-less) token.
    pub fn special(kind: Kind) -> Token {
        Token {
            kind,
            text: Vec::new(),
        }
    }

    fn has_text(&self) -> bool {
        matches!(
            self.kind,
            Kind::Atom | Kind::Quote | Kind::Literal | Kind::Comment
        )
    }
}

/// Why a field could not be tokenized or read as an address list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// An unbalanced `)` or `]`, or a comment, quoted string or literal without its end.
    Lexical,
    /// The tokens do not form an RFC 822 address list (e.g. a colon outside a group).
    Syntax,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Lexical => "unbalanced comment, quoted string or domain literal",
            ParseError::Syntax => "not an RFC 822 address list",
        })
    }
}

impl std::error::Error for ParseError {}

/// qmail's `atomok`: may `ch` continue an atom?
fn atom_ok(ch: u8) -> bool {
    !matches!(
        ch,
        b' ' | b'\t'
            | b'\r'
            | b'\n'
            | b'('
            | b'['
            | b'"'
            | b'<'
            | b'>'
            | b';'
            | b':'
            | b'@'
            | b','
            | b'.'
    )
}

/// qmail's `atomcheck`: an atom whose text cannot be written bare becomes a quoted string.
fn atom_kind(text: &[u8]) -> Kind {
    if text
        .iter()
        .any(|&ch| !(32..=126).contains(&ch) || ch == b')' || ch == b']' || ch == b'\\')
    {
        Kind::Quote
    } else {
        Kind::Atom
    }
}

/// Read the inside of a bracketed token starting after its opening byte at `*i`; `close` ends
/// it, `nest` (for comments) opens a deeper level whose brackets are not kept.
fn bracketed(s: &[u8], i: &mut usize, close: u8, nest: Option<u8>) -> Result<Vec<u8>, ParseError> {
    let mut text = Vec::new();
    let mut level = 1usize;
    while level > 0 {
        *i += 1;
        let Some(&ch) = s.get(*i) else {
            return Err(ParseError::Lexical);
        };
        if Some(ch) == nest {
            level += 1;
        } else if ch == close {
            level -= 1;
        } else if ch == b'\\' {
            *i += 1;
            let Some(&esc) = s.get(*i) else {
                return Err(ParseError::Lexical);
            };
            text.push(esc);
        } else {
            text.push(ch);
        }
    }
    *i += 1;
    Ok(text)
}

/// Split `s` into tokens (qmail's `token822_parse`). Blanks and line ends separate tokens and
/// are dropped.
pub fn parse(s: &[u8]) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&ch) = s.get(i) {
        let special = match ch {
            b'.' => Some(Kind::Dot),
            b',' => Some(Kind::Comma),
            b'@' => Some(Kind::At),
            b'<' => Some(Kind::Left),
            b'>' => Some(Kind::Right),
            b':' => Some(Kind::Colon),
            b';' => Some(Kind::Semi),
            _ => None,
        };
        if let Some(kind) = special {
            out.push(Token::special(kind));
            i += 1;
            continue;
        }
        match ch {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b')' | b']' => return Err(ParseError::Lexical),
            b'(' => out.push(Token::new(
                Kind::Comment,
                bracketed(s, &mut i, b')', Some(b'('))?,
            )),
            b'"' => out.push(Token::new(Kind::Quote, bracketed(s, &mut i, b'"', None)?)),
            b'[' => out.push(Token::new(Kind::Literal, bracketed(s, &mut i, b']', None)?)),
            _ => {
                // An atom runs until a byte that cannot continue it; a backslash takes the next
                // byte literally, and a trailing backslash just ends the atom (as in qmail).
                let mut text = Vec::new();
                loop {
                    if s[i] == b'\\' {
                        i += 1;
                        if i >= s.len() {
                            break;
                        }
                    }
                    text.push(s[i]);
                    i += 1;
                    if i >= s.len() || !atom_ok(s[i]) {
                        break;
                    }
                }
                out.push(Token::new(atom_kind(&text), text));
            }
        }
    }
    Ok(out)
}

/// qmail's `needspace`: is a blank written between a token of kind `t1` and one of kind `t2`?
fn need_space(t1: Option<Kind>, t2: Kind) -> bool {
    let Some(t1) = t1 else { return false };
    if matches!(t1, Kind::Colon | Kind::Comma) || t2 == Kind::Left {
        return true;
    }
    let wordish = |k| matches!(k, Kind::Atom | Kind::Literal | Kind::Quote | Kind::Comment);
    wordish(t1) && wordish(t2)
}

/// Write tokens back as header text (qmail's `token822_unparse`), ending with a newline.
///
/// After each comma a line break is considered: it is kept when the line so far would be
/// longer than `linelen` (0: no limit, always join) and otherwise replaced by a blank, which
/// gives qmail's `To: a,\n  b` folding. qmail-inject uses `linelen` 80.
pub fn unparse(tokens: &[Token], linelen: usize) -> Vec<u8> {
    let mut s: Vec<u8> = Vec::new();
    let mut lineb = 0usize;
    let mut linee: Option<usize> = None;
    let mut last: Option<Kind> = None;

    // qmail's NSUW macro: write a tentative "\n " at the end; if the previous tentative break
    // still fits in the line, remove that one (the line goes on), else keep it for good.
    let break_here = |s: &mut Vec<u8>, lineb: &mut usize, linee: &mut Option<usize>| {
        let pos = s.len();
        s.extend_from_slice(b"\n ");
        match *linee {
            Some(le) if linelen == 0 || pos - *lineb <= linelen => {
                s.drain(le..le + 2);
                *linee = Some(s.len() - 2);
            }
            prev => {
                if let Some(le) = prev {
                    *lineb = le + 1;
                }
                *linee = Some(pos);
            }
        }
    };

    for t in tokens {
        if need_space(last, t.kind) {
            s.push(b' ');
        }
        last = Some(t.kind);
        match t.kind {
            Kind::Comma => {
                s.push(b',');
                break_here(&mut s, &mut lineb, &mut linee);
            }
            Kind::At => s.push(b'@'),
            Kind::Dot => s.push(b'.'),
            Kind::Left => s.push(b'<'),
            Kind::Right => s.push(b'>'),
            Kind::Semi => s.push(b';'),
            Kind::Colon => s.push(b':'),
            Kind::Atom | Kind::Quote | Kind::Literal | Kind::Comment => {
                let (open, close) = match t.kind {
                    Kind::Quote => (Some(b'"'), Some(b'"')),
                    Kind::Literal => (Some(b'['), Some(b']')),
                    Kind::Comment => (Some(b'('), Some(b')')),
                    _ => (None, None),
                };
                s.extend(open);
                for &ch in &t.text {
                    if matches!(ch, b'"' | b'[' | b']' | b'(' | b')' | b'\\' | b'\r' | b'\n') {
                        s.push(b'\\');
                    }
                    s.push(ch);
                }
                s.extend(close);
            }
        }
    }
    break_here(&mut s, &mut lineb, &mut linee);
    s.pop(); // the blank of the final tentative break
    s
}

/// The bare text of tokens (qmail's `token822_unquote`): quoted strings lose their quotes,
/// literals keep their brackets, comments vanish. This is the envelope form of an address.
pub fn unquote(tokens: &[Token]) -> Vec<u8> {
    let mut s = Vec::new();
    for t in tokens {
        match t.kind {
            Kind::Comma => s.push(b','),
            Kind::At => s.push(b'@'),
            Kind::Dot => s.push(b'.'),
            Kind::Left => s.push(b'<'),
            Kind::Right => s.push(b'>'),
            Kind::Semi => s.push(b';'),
            Kind::Colon => s.push(b':'),
            Kind::Atom | Kind::Quote => s.extend_from_slice(&t.text),
            Kind::Literal => {
                s.push(b'[');
                s.extend_from_slice(&t.text);
                s.push(b']');
            }
            Kind::Comment => {}
        }
    }
    s
}

/// Walk the address list of a header field (qmail's `token822_addrlist`).
///
/// `tokens` is a whole field, name and colon included: the first two tokens are copied through
/// untouched. Every address (the inside of `<...>`, or a bare `local@domain`) is handed to
/// `callback` with its tokens in **reverse order** (qmail parses address lists from right to
/// left, and its rewriting rules are written for that order); the callback may change them. The
/// result is the whole field with each address replaced by what the callback left, in normal
/// order. Addresses are visited right to left, and the callback's side effects happen even when
/// a syntax error further left makes the whole call fail.
pub fn addrlist(
    tokens: &[Token],
    mut callback: impl FnMut(&mut Vec<Token>),
) -> Result<Vec<Token>, ParseError> {
    let mut out: Vec<Token> = Vec::new();
    let mut addr: Vec<Token> = Vec::new();
    let mut ingroup = false;
    let mut wordok = true;
    let beginning: isize = 2;
    // Token indices as signed numbers: the walk runs down to one below `beginning`.
    let mut t: isize = tokens.len() as isize - 1;
    let at = |t: isize| &tokens[t as usize];

    let mut got_addr = |out: &mut Vec<Token>, addr: &mut Vec<Token>| {
        callback(addr);
        out.append(addr);
    };

    while t >= beginning {
        match at(t).kind {
            Kind::Semi => {
                if !addr.is_empty() {
                    got_addr(&mut out, &mut addr);
                    out.push(Token::special(Kind::Comma));
                }
                if ingroup {
                    return Err(ParseError::Syntax);
                }
                ingroup = true;
                wordok = true;
            }
            Kind::Colon => {
                if !addr.is_empty() {
                    got_addr(&mut out, &mut addr);
                }
                if !ingroup {
                    return Err(ParseError::Syntax);
                }
                ingroup = false;
                while t >= beginning && at(t).kind != Kind::Comma {
                    out.push(at(t).clone());
                    t -= 1;
                }
                if t >= beginning {
                    out.push(at(t).clone());
                    t -= 1;
                }
                wordok = true;
                continue;
            }
            Kind::Right => {
                if !addr.is_empty() {
                    got_addr(&mut out, &mut addr);
                    out.push(Token::special(Kind::Comma));
                }
                out.push(at(t).clone());
                t -= 1;
                while t >= beginning && at(t).kind != Kind::Left {
                    addr.push(at(t).clone());
                    t -= 1;
                }
                // Even an empty address is handed over: `<>` is an address.
                got_addr(&mut out, &mut addr);
                if t < beginning {
                    return Err(ParseError::Syntax);
                }
                out.push(at(t).clone());
                t -= 1;
                while t >= beginning
                    && matches!(
                        at(t).kind,
                        Kind::Comment | Kind::Atom | Kind::Quote | Kind::At | Kind::Dot
                    )
                {
                    out.push(at(t).clone());
                    t -= 1;
                }
                wordok = false;
                continue;
            }
            Kind::Atom | Kind::Quote | Kind::Literal => {
                if !wordok && !addr.is_empty() {
                    got_addr(&mut out, &mut addr);
                    out.push(Token::special(Kind::Comma));
                }
                wordok = false;
                addr.push(at(t).clone());
                t -= 1;
                continue;
            }
            // A comment is lexically a blank: it does not change `wordok`.
            Kind::Comment => {}
            Kind::Comma => {
                if !addr.is_empty() {
                    got_addr(&mut out, &mut addr);
                }
                wordok = true;
            }
            Kind::At | Kind::Dot | Kind::Left => {
                wordok = true;
                addr.push(at(t).clone());
                t -= 1;
                continue;
            }
        }
        out.push(at(t).clone());
        t -= 1;
    }
    if !addr.is_empty() {
        got_addr(&mut out, &mut addr);
    }
    t += 1;
    while t > 0 {
        t -= 1;
        out.push(at(t).clone());
    }
    out.reverse();
    Ok(out)
}

/// Build an address's tokens from its envelope form, as qmail-inject reads `-f` and recipient
/// arguments: the local part (before the last `@`) is quoted when it needs to be, then the
/// whole is tokenized.
pub fn parse_envelope_address(addr: &[u8]) -> Result<Vec<Token>, ParseError> {
    parse(&crate::quote::quote2(addr))
}

impl Token {
    /// The text of an atom, quoted string, literal or comment.
    pub fn text(&self) -> Option<&[u8]> {
        self.has_text().then_some(self.text.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(s: &str) -> String {
        String::from_utf8_lossy(&unparse(&parse(s.as_bytes()).unwrap(), 80)).into_owned()
    }

    #[test]
    fn kinds() {
        let t = parse(b"a.b@[1.2.3.4] \"q\\\"x\" (c (d) e) <>,;:").unwrap();
        let kinds: Vec<Kind> = t.iter().map(|t| t.kind).collect();
        use Kind::*;
        assert_eq!(
            kinds,
            vec![Atom, Dot, Atom, At, Literal, Quote, Comment, Left, Right, Comma, Semi, Colon]
        );
        assert_eq!(t[4].text, b"1.2.3.4");
        assert_eq!(t[5].text, b"q\"x");
        assert_eq!(t[6].text, b"c d e");
    }

    #[test]
    fn lexical_errors() {
        for bad in [")", "]", "(a", "\"a", "[a", "(a\\", "\"a\\"] {
            assert_eq!(parse(bad.as_bytes()), Err(ParseError::Lexical), "{bad}");
        }
        // Inside an atom, ) and ] are taken, and make it a quoted string.
        assert_eq!(parse(b"a)b").unwrap(), vec![Token::new(Kind::Quote, "a)b")]);
    }

    #[test]
    fn unparse_spacing() {
        assert_eq!(rt("To: bob"), "To: bob\n");
        assert_eq!(rt("From:\"A B\"<a@b>"), "From: \"A B\" <a@b>\n");
        assert_eq!(rt("To: a@b (Bob),c"), "To: a@b (Bob), c\n");
        assert_eq!(
            rt("Cc: recipient list not shown: ;"),
            "Cc: recipient list not shown: ;\n"
        );
    }

    #[test]
    fn unparse_folds_at_80() {
        let list: Vec<String> = (0..12).map(|i| format!("user{i}@example.net")).collect();
        let out = rt(&format!("To: {}", list.join(", ")));
        for line in out.lines() {
            assert!(line.len() <= 80, "{line:?}");
        }
        assert!(out
            .starts_with("To: user0@example.net, user1@example.net, user2@example.net,\n  user3"));
    }

    #[test]
    fn addrlist_reverses_each_address() {
        let toks = parse(b"To: a@b, \"C D\" <c@d>, g: e, f;").unwrap();
        let mut seen = Vec::new();
        let out = addrlist(&toks, |a| {
            let mut n = a.clone();
            n.reverse();
            seen.push(String::from_utf8_lossy(&unquote(&n)).into_owned());
        })
        .unwrap();
        assert_eq!(seen, vec!["f", "e", "c@d", "a@b"]);
        assert_eq!(unparse(&out, 80), b"To: a@b, \"C D\" <c@d>, g: e, f;\n");
    }

    #[test]
    fn addrlist_syntax_errors() {
        for bad in ["To: a:b", "To: a;b;", "To: a>"] {
            let toks = parse(bad.as_bytes()).unwrap();
            assert_eq!(addrlist(&toks, |_| {}), Err(ParseError::Syntax), "{bad}");
        }
    }
}
