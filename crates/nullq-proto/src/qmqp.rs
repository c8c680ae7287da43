//! QMQP (cr.yp.to/proto/qmqp.html): one request, one response, per connection.
//!
//! A request is one netstring holding netstrings: the message, the envelope sender, then one or
//! more recipients. The response is one netstring whose first byte is `K` (accepted), `Z`
//! (temporary failure) or `D` (permanent failure), then text for a person.
//!
//! [`RequestDecoder`] is sans-I/O and incremental: feed it whatever bytes arrived and it yields
//! [`Event`]s. Message bytes come out as slices of the input (zero-copy, so a 100 MB message is
//! streamed, never buffered); addresses are buffered, but only up to the address limit. Every
//! length the peer announces is checked against [`Limits`] as soon as it is read. A request that
//! breaks a limit but is well formed is read to its end and then [`Event::Rejected`] — the server
//! must not answer before the last byte, and a client that is cut off mid-send may never read the
//! answer — while a format error stops decoding at once. That holds however large the request
//! says it is (up to [`MAX_ANNOUNCED`]): bytes after a broken limit are consumed and thrown away,
//! never buffered, and [`RequestDecoder::rejection`] tells the caller early, so that it can bound
//! how much it reads (its time and its byte budget) and answer `D` when it stops.

use crate::error::{DecodeError, ErrorKind};
use crate::netstring::{self, Length, LengthParser};

/// The largest length a request may announce and still be read (to be refused at its end): 18
/// digits. A longer length is a format error, answered at once; no client sends an exabyte.
pub const MAX_ANNOUNCED: u64 = 999_999_999_999_999_999;

/// Limits applied while decoding a request. The defaults are qmail's and Postfix's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest message in bytes (qmail's databytes, Postfix's message_size_limit: 10,240,000).
    pub max_message: u64,
    /// Most recipients in one request (Postfix's smtpd_recipient_limit: 1000).
    pub max_recipients: usize,
    /// Longest address in bytes; qmail-qmqpd refuses addresses of 1,000 bytes or more.
    pub max_address_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message: 10_240_000,
            max_recipients: 1000,
            max_address_len: 999,
        }
    }
}

impl Limits {
    /// The largest outer netstring worth reading: the largest message plus the largest envelope,
    /// with room for every netstring's own length and punctuation. A request announcing more
    /// necessarily breaks one of the limits; it is refused ([`ErrorKind::RequestTooBig`] until
    /// the limit it breaks is found) and read on, discarded, to its end.
    pub fn max_request(&self) -> u64 {
        let field = |len: u64| len.saturating_add(22); // 20 digits, ':' and ','
        let addresses = (self.max_recipients as u64).saturating_add(1);
        field(self.max_message)
            .saturating_add(addresses.saturating_mul(field(self.max_address_len as u64)))
            // One recipient more than allowed must still be read to be refused politely.
            .saturating_add(field(self.max_address_len as u64))
    }
}

/// What the decoder found in the bytes fed so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The message starts; it has `len` bytes.
    MessageStart {
        /// The message's length in bytes.
        len: u64,
    },
    /// The next bytes of the message (a slice of the input).
    Message(&'a [u8]),
    /// The envelope sender (possibly empty: the null sender of bounces).
    Sender(Vec<u8>),
    /// One envelope recipient.
    Recipient(Vec<u8>),
    /// The request ended well: answer it now.
    End,
    /// The request ended, but broke a limit on the way: answer `D` with this reason. Events after
    /// the limit was broken were not reported.
    Rejected(DecodeError),
}

#[derive(Debug, Clone)]
enum State {
    OuterLength(LengthParser),
    MessageLength(LengthParser),
    MessageBody { left: u64 },
    MessageComma,
    FieldStart,
    FieldLength(LengthParser),
    FieldBody { left: u64 },
    FieldComma,
    OuterComma,
    Done,
    Failed(DecodeError),
}

/// Incremental decoder of one QMQP request. See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    limits: Limits,
    state: State,
    /// Bytes consumed since the start of the stream (for error offsets).
    offset: u64,
    /// Bytes of the outer netstring not yet consumed.
    outer_left: u64,
    /// Fields read after the message: the first is the sender.
    fields: usize,
    /// The address being collected (empty and unused while discarding).
    field: Vec<u8>,
    /// The first limit broken; once set, the rest of the request is read and thrown away.
    rejected: Option<DecodeError>,
    /// Set when the request announced more than [`Limits::max_request`]: the reason given if no
    /// more precise limit is found broken before the request ends or the caller stops reading.
    oversize: Option<DecodeError>,
    /// The cap on inner lengths: the request's own length when that is over the limit.
    inner_max: u64,
}

impl RequestDecoder {
    /// A decoder for one request under `limits`.
    pub fn new(limits: Limits) -> RequestDecoder {
        let max = limits.max_request();
        RequestDecoder {
            limits,
            state: State::OuterLength(LengthParser::new(MAX_ANNOUNCED)),
            offset: 0,
            outer_left: 0,
            fields: 0,
            field: Vec::new(),
            rejected: None,
            oversize: None,
            inner_max: max,
        }
    }

    /// The limits this decoder applies.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The limit this request breaks, once known: from then on its bytes are only discarded, and
    /// it will end in [`Event::Rejected`] (with this reason, or a more precise one found on the
    /// way). A caller that stops reading before the end (its byte budget is spent, the client
    /// went quiet or closed) answers `D` with it.
    pub fn rejection(&self) -> Option<&DecodeError> {
        self.rejected.as_ref().or(self.oversize.as_ref())
    }

    /// Whether the request is complete ([`Event::End`] or [`Event::Rejected`] was returned).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Feed bytes. Returns how many were consumed and the event they completed, if any; call
    /// again with the rest. `(n, None)` means all `n == input.len()` bytes were consumed and more
    /// are needed. After an error the decoder keeps returning it.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Event<'a>>), DecodeError> {
        let mut used = 0;
        while used < input.len() {
            // Message bodies are the bulk of the traffic: hand them out as one slice.
            if let State::MessageBody { left } = &mut self.state {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - used);
                let chunk = &input[used..used + take];
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::MessageComma;
                }
                self.advance(take as u64);
                used += take;
                if self.rejected.is_none() && !chunk.is_empty() {
                    return Ok((used, Some(Event::Message(chunk))));
                }
                continue;
            }
            if let State::FieldBody { left } = &mut self.state {
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - used);
                if self.rejected.is_none() {
                    self.field.extend_from_slice(&input[used..used + take]);
                }
                *left -= take as u64;
                if *left == 0 {
                    self.state = State::FieldComma;
                }
                self.advance(take as u64);
                used += take;
                continue;
            }
            let byte = input[used];
            let event = self.step(byte)?;
            used += 1;
            if event.is_some() {
                return Ok((used, event));
            }
        }
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        Ok((used, None))
    }

    /// Tell the decoder the input ended. Fails unless the request was complete.
    pub fn eof(&self) -> Result<(), DecodeError> {
        match &self.state {
            State::Done => Ok(()),
            State::Failed(e) => Err(e.clone()),
            _ => Err(DecodeError::new(ErrorKind::Truncated, self.offset)),
        }
    }

    /// Account for `n` body bytes (message or field), which always lie inside the outer
    /// netstring: their length was checked against what the request had left.
    fn advance(&mut self, n: u64) {
        self.offset += n;
        self.outer_left = self.outer_left.saturating_sub(n);
    }

    fn fail(&mut self, kind: ErrorKind) -> DecodeError {
        let e = DecodeError::new(kind, self.offset);
        self.state = State::Failed(e.clone());
        e
    }

    /// Consume one byte of framing (lengths and punctuation).
    fn step<'a>(&mut self, byte: u8) -> Result<Option<Event<'a>>, DecodeError> {
        let offset = self.offset;
        // Every byte inside the outer netstring must fit in it.
        let inside = !matches!(
            self.state,
            State::OuterLength(_) | State::OuterComma | State::Done | State::Failed(_)
        );
        if inside {
            if self.outer_left == 0 {
                return Err(self.fail(ErrorKind::InnerOverrunsOuter));
            }
            self.outer_left -= 1;
        }
        self.offset += 1;
        let result = match &mut self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Done => Err(ErrorKind::TrailingData),
            State::OuterLength(p) => match p.push(byte, offset) {
                Err(e) => return Err(self.fail_with(e)),
                Ok(Length::Partial) => Ok(None),
                Ok(Length::Done(len)) => {
                    self.outer_left = len;
                    if len == 0 {
                        // An empty request has no message: say so precisely.
                        return Err(self.fail(ErrorKind::InnerOverrunsOuter));
                    }
                    let max = self.limits.max_request();
                    if len > max {
                        // Some limit inside is broken; which one shows as the request is read.
                        self.oversize = Some(DecodeError::new(
                            ErrorKind::RequestTooBig {
                                length: len,
                                limit: max,
                            },
                            offset,
                        ));
                        self.inner_max = len;
                    }
                    self.state = State::MessageLength(LengthParser::new(self.inner_max));
                    Ok(None)
                }
            },
            State::MessageLength(p) => match p.push(byte, offset) {
                Err(e) => return Err(self.fail_with(e)),
                Ok(Length::Partial) => Ok(None),
                Ok(Length::Done(len)) => {
                    // The body and its comma must fit in what is left of the request.
                    if len >= self.outer_left {
                        return Err(self.fail(ErrorKind::InnerOverrunsOuter));
                    }
                    if len > self.limits.max_message {
                        self.reject(ErrorKind::MessageTooBig {
                            length: len,
                            limit: self.limits.max_message,
                        });
                    }
                    self.state = if len == 0 {
                        State::MessageComma
                    } else {
                        State::MessageBody { left: len }
                    };
                    if self.rejected.is_some() {
                        Ok(None)
                    } else {
                        Ok(Some(Event::MessageStart { len }))
                    }
                }
            },
            State::MessageComma | State::FieldComma if byte != b',' => {
                Err(ErrorKind::MissingComma(byte))
            }
            State::MessageComma => {
                self.state = self.after_field();
                Ok(None)
            }
            State::FieldComma => {
                let field = std::mem::take(&mut self.field);
                self.fields += 1;
                self.state = self.after_field();
                if self.rejected.is_some() {
                    Ok(None)
                } else if self.fields == 1 {
                    Ok(Some(Event::Sender(field)))
                } else {
                    Ok(Some(Event::Recipient(field)))
                }
            }
            State::FieldStart => {
                let mut p = LengthParser::new(self.inner_max);
                match p.push(byte, offset) {
                    Err(e) => return Err(self.fail_with(e)),
                    Ok(Length::Partial) => {
                        self.state = State::FieldLength(p);
                        Ok(None)
                    }
                    Ok(Length::Done(_)) => unreachable_colon(),
                }
            }
            State::FieldLength(p) => match p.push(byte, offset) {
                Err(e) => return Err(self.fail_with(e)),
                Ok(Length::Partial) => Ok(None),
                Ok(Length::Done(len)) => {
                    if len >= self.outer_left {
                        return Err(self.fail(ErrorKind::InnerOverrunsOuter));
                    }
                    let recipient = self.fields >= 1;
                    if recipient && self.fields > self.limits.max_recipients {
                        self.reject(ErrorKind::TooManyRecipients {
                            limit: self.limits.max_recipients,
                        });
                    }
                    if len > self.limits.max_address_len as u64 {
                        self.reject(ErrorKind::AddressTooLong {
                            length: len,
                            limit: self.limits.max_address_len,
                        });
                    }
                    self.state = if len == 0 {
                        State::FieldComma
                    } else {
                        State::FieldBody { left: len }
                    };
                    Ok(None)
                }
            },
            State::OuterComma if byte == b',' => {
                self.state = State::Done;
                Ok(Some(match self.rejected.take().or(self.oversize.take()) {
                    Some(e) => Event::Rejected(e),
                    None => Event::End,
                }))
            }
            State::OuterComma => Err(ErrorKind::MissingComma(byte)),
            State::MessageBody { .. } | State::FieldBody { .. } => Ok(None),
        };
        match result {
            Ok(event) => Ok(event),
            Err(kind) => {
                // Locate the error at the offending byte, not after it.
                self.offset = offset;
                let e = self.fail(kind);
                self.offset = offset + 1;
                Err(e)
            }
        }
    }

    fn fail_with(&mut self, e: DecodeError) -> DecodeError {
        self.state = State::Failed(e.clone());
        e
    }

    /// Record the first limit broken; decoding goes on, discarding.
    fn reject(&mut self, kind: ErrorKind) {
        if self.rejected.is_none() {
            self.rejected = Some(DecodeError::new(kind, self.offset));
        }
        self.field.clear();
    }

    /// The state after the message or a field: another field, or the end of the request.
    fn after_field(&mut self) -> State {
        if self.outer_left > 0 {
            return State::FieldStart;
        }
        let missing = match self.fields {
            0 => Some(ErrorKind::NoSender),
            1 => Some(ErrorKind::NoRecipient),
            _ => None,
        };
        match missing {
            Some(kind) => State::Failed(DecodeError::new(kind, self.offset)),
            None => State::OuterComma,
        }
    }
}

/// A `:` as the first byte of a field's length is refused by the parser itself.
fn unreachable_colon<'a>() -> Result<Option<Event<'a>>, ErrorKind> {
    Err(ErrorKind::MissingLength)
}

/// The bytes that go before and after the message in a request, so a client can stream the
/// message between them without holding it: `(prefix, suffix)` where the request is
/// `prefix + message + suffix`.
pub fn request_frame(
    message_len: u64,
    sender: &[u8],
    recipients: &[Vec<u8>],
) -> (Vec<u8>, Vec<u8>) {
    let mut envelope = Vec::new();
    netstring::encode(&mut envelope, sender);
    for r in recipients {
        netstring::encode(&mut envelope, r);
    }
    let message_prefix = format!("{message_len}:");
    let outer_len = message_prefix.len() as u64 + message_len + 1 + envelope.len() as u64;
    let mut prefix = format!("{outer_len}:").into_bytes();
    prefix.extend_from_slice(message_prefix.as_bytes());
    let mut suffix = Vec::with_capacity(envelope.len() + 2);
    suffix.push(b',');
    suffix.extend_from_slice(&envelope);
    suffix.push(b',');
    (prefix, suffix)
}

/// A whole request in memory (for tests and small messages).
pub fn encode_request(message: &[u8], sender: &[u8], recipients: &[Vec<u8>]) -> Vec<u8> {
    let (mut out, suffix) = request_frame(message.len() as u64, sender, recipients);
    out.extend_from_slice(message);
    out.extend_from_slice(&suffix);
    out
}

/// The three answers of QMQP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `K`: the message was accepted for every recipient.
    Ok,
    /// `Z`: temporary failure; the client should try again later (or another server).
    TempFail,
    /// `D`: permanent failure; the client should give up.
    PermFail,
}

impl Status {
    /// The protocol byte.
    pub fn byte(self) -> u8 {
        match self {
            Status::Ok => b'K',
            Status::TempFail => b'Z',
            Status::PermFail => b'D',
        }
    }
}

/// A QMQP response: a status and text for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// K, Z or D.
    pub status: Status,
    /// The human-readable rest.
    pub text: String,
}

/// Longest response a client reads; real servers send a line.
pub const MAX_RESPONSE: u64 = 64 * 1024;

impl Response {
    /// A response of `status` with `text`.
    pub fn new(status: Status, text: impl Into<String>) -> Response {
        Response {
            status,
            text: text.into(),
        }
    }

    /// The response as the netstring sent on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.text.len() + 1);
        payload.push(self.status.byte());
        payload.extend_from_slice(self.text.as_bytes());
        netstring::encoded(&payload)
    }

    /// Decode a response from the start of `input`: `Ok(None)` means read more; otherwise the
    /// response and how many bytes it took.
    pub fn decode(input: &[u8]) -> Result<Option<(Response, usize)>, DecodeError> {
        let Some((payload, used)) = netstring::decode(input, MAX_RESPONSE)? else {
            return Ok(None);
        };
        let status = match payload.first() {
            Some(b'K') => Status::Ok,
            Some(b'Z') => Status::TempFail,
            Some(b'D') => Status::PermFail,
            _ => return Err(DecodeError::new(ErrorKind::BadResponse, 0)),
        };
        let text = String::from_utf8_lossy(&payload[1..]).into_owned();
        Ok(Some((Response { status, text }, used)))
    }
}

/// Why an address is refused (see [`check_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressProblem {
    /// A control character inside: NUL, CR, LF, TAB, ESC, ... or DEL.
    ControlCharacter,
    /// Not `local@domain`.
    NotLocalAtDomain,
}

impl std::fmt::Display for AddressProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddressProblem::ControlCharacter => {
                write!(f, "address contains a control character")
            }
            AddressProblem::NotLocalAtDomain => {
                write!(f, "address is not of the form local@domain")
            }
        }
    }
}

/// True if `address` holds a control character: a byte below 0x20 (NUL, CR, LF, TAB, ESC, ...)
/// or DEL. A QMQP server refuses such an address ([`check_address`]), so the null client refuses
/// it before a server or its fallback queue sees it.
pub fn has_control_byte(address: &[u8]) -> bool {
    address.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// Check an envelope address: no control character, and `local@domain` with both parts
/// non-empty. The empty sender (`<>`, bounces) is allowed when `sender` is true.
///
/// A control character is any byte below 0x20, and DEL. RFC 5321 allows none in a mailbox,
/// quoted or not, and no mail system needs one. Downstream, one would reach header lines
/// (`Return-Path`, `Delivered-To`), CommuniGate Pro's envelope lines, a pipe's environment and
/// an SMTP `RCPT TO`. Bytes from 0x80 up (UTF-8) and spaces (in a quoted local part) are left
/// alone.
pub fn check_address(address: &[u8], sender: bool) -> Result<(), AddressProblem> {
    if has_control_byte(address) {
        return Err(AddressProblem::ControlCharacter);
    }
    if sender && address.is_empty() {
        return Ok(());
    }
    // The domain is after the last '@': a quoted local part may itself hold one.
    match address.iter().rposition(|&b| b == b'@') {
        Some(at) if at > 0 && at + 1 < address.len() => Ok(()),
        _ => Err(AddressProblem::NotLocalAtDomain),
    }
}
