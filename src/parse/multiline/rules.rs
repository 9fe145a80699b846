//! The built-in multiline rules: JVM stack traces, Python tracebacks, Go panics and goroutine
//! dumps, Node.js errors.
//!
//! Each rule is a small state machine over the lines of one stream, in two questions:
//! [`Builtin::begins`] asks what a line is when no record is open (the start of an event, a
//! continuation whose start was not seen, or an ordinary line that goes out alone), and
//! [`Builtin::continues`] asks whether a line belongs to the open record, in the state the
//! record's earlier lines left. The state is a `u16` that only means something while a record is
//! open; every record starts from [`Builtin::begins`], never from a state carried over, so the
//! grouping from any record's first line is the same on every read (a restart re-reads from
//! there and must rebuild the same records).
//!
//! Only lines that may start an event are held: an ordinary log line is a record of its own at
//! once, without a copy. The checks are prefix and substring tests on bytes, never a regex.
//! Common to all: an indented line (space or tab) continues an event, and one met with no event
//! open begins a record of its own that later indented lines join (the frames after a rotation,
//! or after a record was cut at `max_lines`). Being wrong about a start costs little (the line is
//! held until the next one, then goes out alone); being wrong about a continuation glues two
//! events, so continuations are narrow.

use memchr::{memchr, memchr_iter, memrchr};

use super::Begin;

/// A built-in rule, by the name users give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// Java, Kotlin, Scala and other JVM stack traces: `Exception in thread`, `Caused by:`,
    /// `Suppressed:`, `... 12 more`.
    Java,
    /// Python tracebacks, chained ones included (`During handling of the above exception`).
    Python,
    /// Go panics, fatal errors and goroutine dumps (SIGQUIT).
    Go,
    /// Node.js errors (`    at` frames, inspected properties, uncaught exceptions).
    Nodejs,
}

impl Builtin {
    pub const ALL: [Builtin; 4] = [Builtin::Java, Builtin::Python, Builtin::Go, Builtin::Nodejs];

    pub const fn name(self) -> &'static str {
        match self {
            Builtin::Java => "java",
            Builtin::Python => "python",
            Builtin::Go => "go",
            Builtin::Nodejs => "nodejs",
        }
    }

    /// What `line` is when no record is open.
    pub(super) fn begins(self, line: &[u8]) -> Begin {
        match self {
            Builtin::Java => java::begins(line),
            Builtin::Python => python::begins(line),
            Builtin::Go => go::begins(line),
            Builtin::Nodejs => node::begins(line),
        }
    }

    /// Whether `line` continues the open record, which is in `state`; the state after it.
    pub(super) fn continues(self, state: u16, line: &[u8]) -> Option<u16> {
        match self {
            Builtin::Java => java::continues(line).then_some(0),
            Builtin::Python => python::continues(state, line),
            Builtin::Go => go::continues(line).then_some(go::TRACE),
            Builtin::Nodejs => node::continues(state, line),
        }
    }
}

/// Starts with a space or a tab.
#[inline]
fn indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

fn trim_start(line: &[u8]) -> &[u8] {
    let n = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &line[n..]
}

fn trim_end(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    &line[..line.len() - n]
}

/// `line` starts with one of `prefixes`.
fn starts_with_any(line: &[u8], prefixes: &[&[u8]]) -> bool {
    prefixes.iter().any(|p| line.starts_with(p))
}

/// A character of a Java or JavaScript identifier (ASCII), or the `.` between two.
const fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.'
}

mod java {
    use super::*;

    /// The words a throwable's class name ends in.
    const WORDS: [&[u8]; 3] = [b"Exception", b"Error", b"Throwable"];

    pub(super) fn begins(line: &[u8]) -> Begin {
        if continues(line) {
            Begin::Headless(0)
        } else if header(line) {
            Begin::Start(0)
        } else {
            Begin::Single
        }
    }

    /// Frames (`\tat`, `\t... 12 more`), the causes and suppressed exceptions, and whatever else
    /// the JVM indents.
    pub(super) fn continues(line: &[u8]) -> bool {
        indented(line) || starts_with_any(line, &[b"Caused by: ", b"Wrapped by: "])
    }

    /// The first line of a stack trace: `Throwable.toString()`, as `printStackTrace` and logging
    /// frameworks print it: `java.lang.IllegalStateException: message`, `Exception in thread
    /// "main" java.lang.OutOfMemoryError: Java heap space`, `com.acme.BillingFailure`.
    pub(super) fn header(line: &[u8]) -> bool {
        line.starts_with(b"Exception in thread ") || throwable_word(line) || qualified_name(line)
    }

    /// `Exception`, `Error` or `Throwable` followed by `:` or the end of the line. Found from
    /// the colons (one `memchr` pass over an ordinary line), not by searching for each word.
    fn throwable_word(line: &[u8]) -> bool {
        let ends = |text: &[u8]| WORDS.iter().any(|w| text.ends_with(w));
        ends(trim_end(line)) || memchr_iter(b':', line).any(|at| ends(&line[..at]))
    }

    /// A class name with a package whose last part is capitalised, alone or before `: `:
    /// `com.acme.BillingFailure: card declined`.
    fn qualified_name(line: &[u8]) -> bool {
        let line = trim_end(line);
        let end = memchr(b':', line).unwrap_or(line.len());
        let (name, rest) = line.split_at(end);
        if !(rest.is_empty() || rest.starts_with(b": ")) {
            return false;
        }
        match memrchr(b'.', name) {
            Some(dot) if dot > 0 => {
                name.get(dot + 1).is_some_and(u8::is_ascii_uppercase)
                    && name.iter().all(|&b| name_byte(b))
            }
            _ => false,
        }
    }
}

mod python {
    use super::*;

    /// In the frames: `  File "...", line N, in f` and the source lines under them.
    const FRAMES: u16 = 1;
    /// After the exception line (`ValueError: bad`): only a chained traceback may follow.
    const RAISED: u16 = 2;
    /// After the text that chains two tracebacks: the next traceback follows.
    const CHAINED: u16 = 3;

    const TRACEBACK: &[u8] = b"Traceback (most recent call last):";
    /// Python 3.11's exception groups: `  + Exception Group Traceback (most recent call last):`.
    const GROUP: &[u8] = b"+ Exception Group Traceback (most recent call last):";
    const CHAINS: [&[u8]; 2] = [
        b"During handling of the above exception, another exception occurred:",
        b"The above exception was the direct cause of the following exception:",
    ];

    fn traceback(line: &[u8]) -> bool {
        line.starts_with(TRACEBACK) || (indented(line) && trim_start(line).starts_with(GROUP))
    }

    pub(super) fn begins(line: &[u8]) -> Begin {
        if traceback(line) {
            Begin::Start(FRAMES)
        } else if indented(line) {
            Begin::Headless(FRAMES)
        } else {
            Begin::Single
        }
    }

    pub(super) fn continues(state: u16, line: &[u8]) -> Option<u16> {
        match state {
            FRAMES if line.starts_with(TRACEBACK) => None,
            FRAMES if line.is_empty() || indented(line) => Some(FRAMES),
            // The first line back at the margin is the exception: `KeyError: 'id'`.
            FRAMES => Some(RAISED),
            RAISED | CHAINED if starts_with_any(line, &CHAINS) => Some(CHAINED),
            RAISED if line.is_empty() || indented(line) => Some(RAISED),
            CHAINED if line.is_empty() => Some(CHAINED),
            CHAINED if traceback(line) || indented(line) => Some(FRAMES),
            _ => None,
        }
    }
}

mod go {
    use super::*;

    /// Inside a panic or a dump.
    pub(super) const TRACE: u16 = 1;

    /// What a Go program prints first when it dies: a panic, a runtime fatal error, or the
    /// signal that made it dump its goroutines.
    const HEADERS: [&[u8]; 11] = [
        b"panic: ",
        b"fatal error: ",
        b"runtime: ",
        b"SIGQUIT: ",
        b"SIGABRT: ",
        b"SIGSEGV: ",
        b"SIGBUS: ",
        b"SIGILL: ",
        b"SIGTRAP: ",
        b"SIGFPE: ",
        b"SIGSYS: ",
    ];

    /// Lines of a trace at the margin, other than function calls.
    const LINES: [&[u8]; 11] = [
        b"goroutine ",
        b"[signal ",
        b"created by ",
        b"panic: ",
        b"fatal error: ",
        b"runtime: ",
        b"runtime stack:",
        b"PC=",
        b"exit status ",
        b"...additional frames elided...",
        b"signal arrived during ",
    ];

    pub(super) fn begins(line: &[u8]) -> Begin {
        if starts_with_any(line, &HEADERS) || goroutine_header(line) {
            Begin::Start(TRACE)
        } else if indented(line) {
            Begin::Headless(TRACE)
        } else {
            Begin::Single
        }
    }

    /// Blank lines between goroutines, file lines (`\t/app/main.go:17 +0x85`), function calls
    /// (`main.(*Server).handle(0x0, {0x5b2a40, 0xc000012345})`), goroutine headers, registers.
    pub(super) fn continues(line: &[u8]) -> bool {
        line.is_empty()
            || indented(line)
            || starts_with_any(line, &LINES)
            || call(line)
            || register(line)
    }

    /// `goroutine 1 [running]:`, a dump without a panic before it (`debug.PrintStack`).
    fn goroutine_header(line: &[u8]) -> bool {
        line.strip_prefix(b"goroutine ")
            .is_some_and(|rest| rest.first().is_some_and(u8::is_ascii_digit))
            && trim_end(line).ends_with(b"]:")
    }

    /// A frame's function: a name without spaces, then its arguments in parentheses.
    fn call(line: &[u8]) -> bool {
        let line = trim_end(line);
        line.ends_with(b")")
            && memchr(b'(', line)
                .is_some_and(|open| open > 0 && memchr(b' ', &line[..open]).is_none())
    }

    /// A register of a fatal signal's dump: `rax    0x0`, `rflags 0x10246`.
    fn register(line: &[u8]) -> bool {
        let name = line
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        (2..=6).contains(&name)
            && line.get(name) == Some(&b' ')
            && trim_start(&line[name..]).starts_with(b"0x")
    }
}

mod node {
    use super::*;

    /// After the error line: `    at` frames and inspected properties until a `}` at the margin.
    pub(super) const ERROR: u16 = 1;
    /// After an uncaught exception's `/app/server.js:42`: the source line follows, as written.
    const SOURCE: u16 = 2;
    /// After the source line: the caret line, blank lines, then the error.
    const CARET: u16 = 3;

    pub(super) fn begins(line: &[u8]) -> Begin {
        if error_line(line) {
            Begin::Start(ERROR)
        } else if location(line) {
            Begin::Start(SOURCE)
        } else if indented(line) {
            Begin::Headless(ERROR)
        } else {
            Begin::Single
        }
    }

    pub(super) fn continues(state: u16, line: &[u8]) -> Option<u16> {
        match state {
            SOURCE => Some(CARET),
            CARET
                if trim_end(line)
                    .iter()
                    .all(|&b| b == b' ' || b == b'\t' || b == b'^') =>
            {
                Some(CARET)
            }
            // What the uncaught exception prints after the caret is the error, whatever it is
            // (`Error: boom`, `[UnhandledPromiseRejection: ...] {`).
            CARET => Some(ERROR),
            ERROR
                if line.is_empty()
                    || indented(line)
                    || starts_with_any(line, &[b"}", b"]", b"Node.js v", b"Thrown at:"]) =>
            {
                Some(ERROR)
            }
            _ => None,
        }
    }

    /// `Error: boom`, `TypeError [ERR_INVALID_ARG_TYPE]: ...`, `Uncaught RangeError: ...`,
    /// `Trace: here` (`console.trace`), `[Error: boom]`.
    fn error_line(line: &[u8]) -> bool {
        let line = line.strip_prefix(b"Uncaught ").unwrap_or(line);
        let line = line.strip_prefix(b"[").unwrap_or(line);
        let name_len = line.iter().take_while(|&&b| name_byte(b)).count();
        let (name, mut rest) = line.split_at(name_len);
        if !(name.ends_with(b"Error") || name.ends_with(b"Exception") || name == b"Trace") {
            return false;
        }
        if let Some(code) = rest.strip_prefix(b" [") {
            match memchr(b']', code) {
                Some(close) => rest = &code[close + 1..],
                None => return false,
            }
        }
        rest.first() == Some(&b':') || trim_end(rest).is_empty()
    }

    /// Where an uncaught exception was thrown: `/app/server.js:42`,
    /// `node:internal/process/promises:289`, `file:///app/index.mjs:3`.
    fn location(line: &[u8]) -> bool {
        let line = trim_end(line);
        let Some(colon) = memrchr(b':', line) else {
            return false;
        };
        let (path, number) = (&line[..colon], &line[colon + 1..]);
        !number.is_empty()
            && number.iter().all(u8::is_ascii_digit)
            && memchr(b' ', path).is_none()
            && (path.starts_with(b"/") || path.starts_with(b"node:") || path.starts_with(b"file:"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_headers_and_continuations() {
        let starts: &[&str] = &[
            "java.lang.IllegalStateException: Failed to execute CommandLineRunner",
            "java.lang.NullPointerException",
            "Exception in thread \"main\" java.lang.StackOverflowError",
            "scala.MatchError: 5 (of class java.lang.Integer)",
            "com.acme.billing.CardDeclined: insufficient funds",
            "kotlin.KotlinNullPointerException",
        ];
        for line in starts {
            assert_eq!(
                Builtin::Java.begins(line.as_bytes()),
                Begin::Start(0),
                "{line}"
            );
        }
        let continuations: &[&str] = &[
            "\tat com.example.App.main(App.java:10)",
            "\t... 12 more",
            "Caused by: java.io.IOException: Broken pipe",
            "\tSuppressed: java.lang.RuntimeException: close failed",
            "\t\tat com.example.Res.close(Res.java:5)",
            "    at java.base/java.lang.Thread.run(Thread.java:833)",
        ];
        for line in continuations {
            assert_eq!(
                Builtin::Java.continues(0, line.as_bytes()),
                Some(0),
                "{line}"
            );
        }
        let singles: &[&str] = &[
            "2026-11-22 10:00:01.123 INFO  [main] c.e.App - Started App in 3.2 seconds",
            "GET /api/v1/items 200 12ms",
            "ERROR connection refused",
            "",
            "www.example.com: resolved",
        ];
        for line in singles {
            assert_eq!(
                Builtin::Java.begins(line.as_bytes()),
                Begin::Single,
                "{line}"
            );
            assert_eq!(Builtin::Java.continues(0, line.as_bytes()), None, "{line}");
        }
    }

    #[test]
    fn node_error_lines_and_locations() {
        for line in [
            "Error: boom",
            "TypeError: Cannot read properties of undefined (reading 'id')",
            "TypeError [ERR_INVALID_ARG_TYPE]: The \"path\" argument must be of type string",
            "Uncaught RangeError: Maximum call stack size exceeded",
            "[Error: ENOENT: no such file or directory, open 'x']",
            "AggregateError: All promises were rejected",
            "Trace: here",
        ] {
            assert_eq!(
                Builtin::Nodejs.begins(line.as_bytes()),
                Begin::Start(node::ERROR),
                "{line}"
            );
        }
        for line in [
            "/app/server.js:42",
            "node:internal/process/promises:289",
            "file:///app/index.mjs:3",
        ] {
            assert!(
                matches!(Builtin::Nodejs.begins(line.as_bytes()), Begin::Start(_)),
                "{line}"
            );
        }
        for line in [
            "Server listening on :3000",
            "ErrorHandler registered",
            "/healthz 200",
            "Errors: 0",
        ] {
            assert_eq!(
                Builtin::Nodejs.begins(line.as_bytes()),
                Begin::Single,
                "{line}"
            );
        }
    }

    #[test]
    fn go_lines() {
        for line in [
            "main.main()",
            "main.(*Server).handle(0x0, {0x5b2a40, 0xc000012345})",
            "panic({0x4b8f20?, 0x55c6a0?})",
            "goroutine 18 [chan receive, 5 minutes]:",
            "rax    0xca",
            "rflags 0x286",
            "",
            "\t/usr/local/go/src/runtime/panic.go:770 +0x132",
        ] {
            assert!(go::continues(line.as_bytes()), "{line}");
        }
        for line in [
            "listening on :8080",
            "level=info msg=\"GET /\" (200)",
            "ok (cached)",
        ] {
            assert!(!go::continues(line.as_bytes()), "{line}");
        }
        assert_eq!(
            Builtin::Go.begins(b"goroutine 1 [running]:"),
            Begin::Start(go::TRACE)
        );
    }
}
