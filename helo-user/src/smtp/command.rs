//! The few SMTP commands the agent itself understands. Everything else is either refused before
//! the greeting or relayed to the MTA untouched after it.

#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// HELO or EHLO with its raw argument (may be empty).
    Greeting {
        ehlo: bool,
        arg: &'a [u8],
    },
    Quit,
    Noop,
    Rset,
    /// `RCPT TO:<addr>`: the address inside the brackets (or the raw text without them).
    Rcpt(&'a str),
    /// Commands after which the relay stops looking: the bytes that follow are TLS or message
    /// content.
    StartTls,
    Data,
    /// `BDAT size [LAST]` (RFC 3030): `size` octets of message follow the line at once, without
    /// waiting for a reply. `None` when the size does not parse (the MTA will say so).
    Bdat(Option<u64>),
    Other,
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub fn parse(line: &[u8]) -> Command<'_> {
    let line = strip_eol(line);
    let (verb, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &line[line.len()..]),
    };
    let is = |v: &str| verb.eq_ignore_ascii_case(v.as_bytes());
    if is("HELO") || is("EHLO") {
        // The argument: after the blanks, up to the next space (trailing words are ignored, as the
        // kernel does).
        let rest = rest.trim_ascii_start();
        let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        return Command::Greeting { ehlo: is("EHLO"), arg: &rest[..end] };
    }
    if is("QUIT") {
        Command::Quit
    } else if is("NOOP") {
        Command::Noop
    } else if is("RSET") {
        Command::Rset
    } else if is("STARTTLS") {
        Command::StartTls
    } else if is("DATA") {
        Command::Data
    } else if is("BDAT") {
        let size = rest.trim_ascii().split(|&b| b == b' ').next().and_then(|n| std::str::from_utf8(n).ok()?.parse().ok());
        Command::Bdat(size)
    } else if is("RCPT") {
        rcpt_address(rest).map(Command::Rcpt).unwrap_or(Command::Other)
    } else {
        Command::Other
    }
}

fn rcpt_address(rest: &[u8]) -> Option<&str> {
    let rest = std::str::from_utf8(rest).ok()?.trim_start();
    let to = rest.get(..3).filter(|p| p.eq_ignore_ascii_case("TO:"))?;
    let addr = rest[to.len()..].trim_start();
    let addr = match addr.strip_prefix('<') {
        Some(inner) => &inner[..inner.find('>')?],
        None => addr.split_ascii_whitespace().next()?,
    };
    Some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert_eq!(parse(b"EHLO mail.example.com\r\n"), Command::Greeting { ehlo: true, arg: b"mail.example.com" });
        assert_eq!(parse(b"helo \t x.example extra\r\n"), Command::Greeting { ehlo: false, arg: b"x.example" });
        assert_eq!(parse(b"HELO\r\n"), Command::Greeting { ehlo: false, arg: b"" });
        assert_eq!(parse(b"HELOX a\r\n"), Command::Other);
    }

    #[test]
    fn rcpt() {
        assert_eq!(parse(b"RCPT TO:<user@example.test>\r\n"), Command::Rcpt("user@example.test"));
        assert_eq!(parse(b"rcpt to: <u@x> NOTIFY=NEVER\r\n"), Command::Rcpt("u@x"));
        assert_eq!(parse(b"RCPT TO:u@x\r\n"), Command::Rcpt("u@x"));
        assert_eq!(parse(b"RCPT FROM:<u@x>\r\n"), Command::Other);
    }

    #[test]
    fn simple_commands() {
        for (l, c) in [
            (&b"QUIT\r\n"[..], Command::Quit),
            (b"noop\r\n", Command::Noop),
            (b"RSET\n", Command::Rset),
            (b"STARTTLS\r\n", Command::StartTls),
            (b"DATA\r\n", Command::Data),
            (b"BDAT 100 LAST\r\n", Command::Bdat(Some(100))),
            (b"bdat 7\r\n", Command::Bdat(Some(7))),
            (b"BDAT x\r\n", Command::Bdat(None)),
            (b"MAIL FROM:<a@b>\r\n", Command::Other),
        ] {
            assert_eq!(parse(l), c);
        }
    }
}
