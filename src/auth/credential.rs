//! Credentials: secret generation, the single-string token format, and parsing of the
//! `authorization` header (`Basic base64(key_id:secret)` or `Bearer <token>`).
//!
//! Token format (modelled on GitHub's): `apk_` + base62(key id (16 bytes) ‖ secret (32 bytes)), fixed
//! 65 characters, + base62(CRC-32 of everything before it), fixed 6 characters: 75 characters in all.
//! The prefix lets secret scanners spot a leaked token; the checksum lets a server reject a mistyped or
//! truncated token without touching the database. The checksum is not a MAC: forging one is trivial,
//! and it protects nothing but the database from typos.

use std::fmt;

use base64::Engine as _;
use subtle::ConstantTimeEq as _;
use uuid::Uuid;
use zeroize::Zeroize;

/// Prefix of every token.
pub const TOKEN_PREFIX: &str = "apk_";
/// Bytes of entropy in a secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Length of a secret in its base62 text form.
pub const SECRET_CHARS: usize = 43;
const BODY_CHARS: usize = 65;
const CHECKSUM_CHARS: usize = 6;
/// Length of a token.
pub const TOKEN_CHARS: usize = TOKEN_PREFIX.len() + BODY_CHARS + CHECKSUM_CHARS;
/// Longest `authorization` value that is parsed at all; longer ones are rejected unread.
const MAX_AUTHORIZATION_LEN: usize = 512;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a credential could not be parsed. Deliberately vague: callers answer UNAUTHENTICATED.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed credential")]
pub struct MalformedCredential;

/// A key secret: 256 bits from the OS CSPRNG. Its `Debug` is redacted, it is zeroed on drop, and
/// equality is constant-time.
#[derive(Clone)]
pub struct Secret([u8; SECRET_BYTES]);

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl Secret {
    /// Draws a new secret from the operating system's CSPRNG.
    ///
    /// # Errors
    /// Fails only if the OS random source fails; the caller answers INTERNAL.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The raw bytes, which are what gets hashed.
    pub fn expose_bytes(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }

    /// The text form shown to the user once (base62, 43 characters).
    pub fn expose_text(&self) -> String {
        base62_encode(&self.0, SECRET_CHARS)
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`MalformedCredential`] unless `text` is exactly 43 base62 characters encoding 32 bytes.
    pub fn parse(text: &str) -> Result<Self, MalformedCredential> {
        if text.len() != SECRET_CHARS {
            return Err(MalformedCredential);
        }
        let mut bytes = [0u8; SECRET_BYTES];
        base62_decode(text.as_bytes(), &mut bytes)?;
        Ok(Self(bytes))
    }
}

impl From<[u8; SECRET_BYTES]> for Secret {
    /// A secret of these bytes (for tests and tooling; new secrets come from [`Secret::generate`]).
    fn from(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(bytes)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A key ID with its secret: what a caller presents. Its `Debug` shows the secret redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key ID.
    pub key_id: Uuid,
    /// The secret.
    pub secret: Secret,
}

impl Credential {
    /// Builds a credential from an ID and a secret in text form.
    ///
    /// # Errors
    /// [`MalformedCredential`] if either part is malformed.
    pub fn from_parts(key_id: &str, secret: &str) -> Result<Self, MalformedCredential> {
        let key_id = Uuid::try_parse(key_id).map_err(|_| MalformedCredential)?;
        Ok(Self { key_id, secret: Secret::parse(secret)? })
    }

    /// The single-string token for this credential.
    pub fn token(&self) -> String {
        let mut payload = [0u8; 16 + SECRET_BYTES];
        payload[..16].copy_from_slice(self.key_id.as_bytes());
        payload[16..].copy_from_slice(&self.secret.0);
        let mut token = String::with_capacity(TOKEN_CHARS);
        token.push_str(TOKEN_PREFIX);
        token.push_str(&base62_encode(&payload, BODY_CHARS));
        payload.zeroize();
        let checksum = crc32fast::hash(token.as_bytes());
        token.push_str(&base62_encode(&checksum.to_be_bytes(), CHECKSUM_CHARS));
        token
    }

    /// Parses a token, checking prefix, length, alphabet and checksum before anything else.
    ///
    /// # Errors
    /// [`MalformedCredential`] for anything that is not a well-formed token.
    pub fn from_token(token: &str) -> Result<Self, MalformedCredential> {
        let bytes = token.as_bytes();
        if bytes.len() != TOKEN_CHARS || !token.starts_with(TOKEN_PREFIX) {
            return Err(MalformedCredential);
        }
        let (signed, checksum_text) = bytes.split_at(TOKEN_CHARS - CHECKSUM_CHARS);
        let mut checksum = [0u8; 4];
        base62_decode(checksum_text, &mut checksum)?;
        if u32::from_be_bytes(checksum) != crc32fast::hash(signed) {
            return Err(MalformedCredential);
        }
        let mut payload = [0u8; 16 + SECRET_BYTES];
        base62_decode(&signed[TOKEN_PREFIX.len()..], &mut payload)?;
        let mut key_id = [0u8; 16];
        key_id.copy_from_slice(&payload[..16]);
        let mut secret = [0u8; SECRET_BYTES];
        secret.copy_from_slice(&payload[16..]);
        payload.zeroize();
        Ok(Self { key_id: Uuid::from_bytes(key_id), secret: Secret(secret) })
    }

    /// Parses an `authorization` header value: `Basic base64(key_id:secret)` or `Bearer <token>`
    /// (scheme names are case-insensitive).
    ///
    /// # Errors
    /// [`MalformedCredential`] for any other scheme or a malformed credential.
    pub fn from_authorization(value: &[u8]) -> Result<Self, MalformedCredential> {
        if value.len() > MAX_AUTHORIZATION_LEN {
            return Err(MalformedCredential);
        }
        let value = std::str::from_utf8(value).map_err(|_| MalformedCredential)?.trim();
        let (scheme, rest) = value.split_once(' ').ok_or(MalformedCredential)?;
        let rest = rest.trim_start();
        if scheme.eq_ignore_ascii_case("bearer") {
            Self::from_token(rest)
        } else if scheme.eq_ignore_ascii_case("basic") {
            let mut decoded =
                base64::engine::general_purpose::STANDARD.decode(rest).map_err(|_| MalformedCredential)?;
            let parsed = std::str::from_utf8(&decoded)
                .map_err(|_| MalformedCredential)
                .and_then(|text| text.split_once(':').ok_or(MalformedCredential))
                .and_then(|(id, secret)| Self::from_parts(id, secret));
            decoded.zeroize();
            parsed
        } else {
            Err(MalformedCredential)
        }
    }

    /// The `authorization` value that presents this credential as a bearer token.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token())
    }

    /// The `authorization` value that presents this credential as HTTP Basic `key_id:secret`.
    pub fn basic(&self) -> String {
        let mut pair = format!("{}:{}", self.key_id, self.secret.expose_text());
        let value = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
        pair.zeroize();
        value
    }
}

/// Longest bearer JWT looked at (a token with a few hundred permissions fits).
pub const MAX_JWT_LEN: usize = 8 * 1024;

/// What an `authorization` header value presents.
#[derive(Debug)]
pub enum Presented {
    /// An API key credential (Basic or Bearer).
    Key(Credential),
    /// Something shaped like a JWT ([`bearer_jwt`]), for
    /// [`super::Authenticator::authenticate_bearer`].
    Jwt(String),
}

impl Presented {
    /// The credential in `value`: an API key's, else a JWT-shaped bearer token; `None` for
    /// anything else.
    pub fn parse(value: &[u8]) -> Option<Self> {
        match Credential::from_authorization(value) {
            Ok(credential) => Some(Self::Key(credential)),
            Err(_) => bearer_jwt(value).map(|token| Self::Jwt(token.to_owned())),
        }
    }
}

/// The token of an `authorization: Bearer <jwt>` value, if it has the shape of a JWS compact
/// serialization (three base64url parts joined by dots; at most [`MAX_JWT_LEN`] bytes): what is
/// not an API key credential may be a person's platform JWT. Only the shape is checked here.
pub fn bearer_jwt(value: &[u8]) -> Option<&str> {
    if value.len() > MAX_JWT_LEN + "Bearer ".len() + 8 {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start();
    let base64url =
        |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut parts = token.split('.');
    let shaped = scheme.eq_ignore_ascii_case("bearer")
        && token.len() <= MAX_JWT_LEN
        && parts.next().is_some_and(base64url)
        && parts.next().is_some_and(base64url)
        && parts.next().is_some_and(base64url)
        && parts.next().is_none();
    shaped.then_some(token)
}

/// Big-endian base62 of `bytes`, left-padded with `0` to `width` characters.
fn base62_encode(bytes: &[u8], width: usize) -> String {
    let mut number = bytes.to_vec();
    let mut digits = Vec::with_capacity(width);
    while digits.len() < width {
        let mut remainder = 0u32;
        for byte in &mut number {
            let acc = (remainder << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            remainder = acc % 62;
        }
        digits.push(BASE62[remainder as usize]);
    }
    number.zeroize();
    digits.reverse();
    let text = String::from_utf8_lossy(&digits).into_owned();
    digits.zeroize();
    text
}

/// The value of base62 digit `c` and whether `c` is one, without branches or table lookups on it
/// (the characters are a secret's): each range test is a sign bit of a subtraction.
fn base62_digit(c: u8) -> (u64, bool) {
    let c = i32::from(c);
    // All ones if lo <= c <= hi, else zero.
    let within = |lo: i32, hi: i32| ((lo - 1 - c) & (c - hi - 1)) >> 31;
    let (decimal, upper, lower) = (within(48, 57), within(65, 90), within(97, 122));
    let digit = (decimal & (c - 48)) | (upper & (c - 55)) | (lower & (c - 61));
    // 0..=61 by construction.
    (digit.unsigned_abs().into(), (decimal | upper | lower) != 0)
}

/// Decodes big-endian base62 into exactly `out.len()` bytes; fails on a bad character or overflow.
///
/// Digits are taken ten at a time (62^10 < 2^60) into 64-bit limbs, multiplying only the limbs the
/// number has reached so far: this runs on every request that presents a token. The time taken
/// depends on the length of `text` and `out`, not on the digits.
fn base62_decode(text: &[u8], out: &mut [u8]) -> Result<(), MalformedCredential> {
    // The number in 64-bit limbs, most significant first; `out` may be shorter than the limbs
    // (a 4-byte checksum), in which case their leading bytes must stay zero.
    let mut buffer = [0u64; MAX_DECODED / 8];
    let limbs = buffer.get_mut(..out.len().div_ceil(8)).ok_or(MalformedCredential)?;
    let (mut valid, mut overflow) = (true, false);
    // The limbs the number may occupy (the lowest `reached`); chunk k makes it < 62^(10k), so
    // this grows by the chunks, not by the digits.
    let mut reached = 0;
    for chunk in text.chunks(10) {
        // Each digit times its own power, not Horner's rule: the multiplications do not wait for
        // one another.
        let scale = POWERS_OF_62[chunk.len()];
        let mut value = 0u64;
        for (&c, power) in chunk.iter().zip(POWERS_OF_62[..chunk.len()].iter().rev()) {
            let (digit, is_digit) = base62_digit(c);
            valid &= is_digit;
            value += digit * power;
        }
        // limbs = limbs * scale + value (scale < 2^60, so no step overflows 128 bits).
        let mut carry = u128::from(value);
        let low = limbs.len() - reached;
        for limb in limbs[low..].iter_mut().rev() {
            let acc = u128::from(*limb) * u128::from(scale) + carry;
            *limb = acc as u64;
            carry = acc >> 64;
        }
        // What is left is below 2^60: one more limb, if there is room for it.
        if reached == limbs.len() {
            overflow |= carry != 0;
        } else {
            limbs[low - 1] = carry as u64;
            reached += 1;
        }
    }
    let mut bytes = [0u8; MAX_DECODED.next_multiple_of(8)];
    let all = &mut bytes[..limbs.len() * 8];
    for (chunk, limb) in all.chunks_exact_mut(8).zip(limbs.iter()) {
        chunk.copy_from_slice(&limb.to_be_bytes());
    }
    let (excess, value) = all.split_at(all.len() - out.len());
    // Folded, not searched: no early exit on the value's bytes.
    let excess_bits = excess.iter().fold(0u8, |bits, &b| bits | b);
    let result = if valid & !overflow & (excess_bits == 0) {
        out.copy_from_slice(value);
        Ok(())
    } else {
        Err(MalformedCredential)
    };
    // Both held the secret.
    buffer.zeroize();
    bytes.zeroize();
    result
}

/// 62^0 to 62^10 (62^10 < 2^60).
const POWERS_OF_62: [u64; 11] = {
    let mut powers = [1u64; 11];
    let mut i = 1;
    while i < powers.len() {
        powers[i] = powers[i - 1] * 62;
        i += 1;
    }
    powers
};

/// The longest value decoded from base62: a key ID and a secret.
const MAX_DECODED: usize = 16 + SECRET_BYTES;

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        Credential { key_id: Uuid::new_v4(), secret: Secret::generate().unwrap() }
    }

    #[test]
    fn the_checksum_is_crc32_ieee() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926, "the standard check value");
    }

    #[test]
    fn token_round_trips_and_has_the_documented_shape() {
        for _ in 0..200 {
            let cred = credential();
            let token = cred.token();
            assert_eq!(token.len(), TOKEN_CHARS);
            assert!(token.starts_with("apk_"));
            assert!(token[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(Credential::from_token(&token).unwrap(), cred);
        }
    }

    #[test]
    fn secret_text_round_trips() {
        for _ in 0..200 {
            let secret = Secret::generate().unwrap();
            let text = secret.expose_text();
            assert_eq!(text.len(), SECRET_CHARS);
            assert_eq!(Secret::parse(&text).unwrap(), secret);
        }
        // The largest 43-character base62 number does not fit in 32 bytes.
        assert_eq!(Secret::parse(&"z".repeat(SECRET_CHARS)), Err(MalformedCredential));
    }

    #[test]
    fn base62_decoding_stops_exactly_at_the_width() {
        let decode = |text: &str, len: usize| {
            let mut out = vec![0u8; len];
            base62_decode(text.as_bytes(), &mut out).map(|()| out)
        };
        // A checksum is 4 bytes in 6 digits (shorter than a 64-bit limb): 2^32 - 1 fits, 2^32 not.
        assert_eq!(decode("4gfFC3", 4), Ok(vec![0xff; 4]));
        assert_eq!(decode("4gfFC4", 4), Err(MalformedCredential));
        assert_eq!(decode("zzzzzz", 4), Err(MalformedCredential));
        // A secret: 2^256 - 1 fits in 32 bytes, 2^256 not.
        assert_eq!(decode("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1", 32), Ok(vec![0xff; 32]));
        assert_eq!(decode("yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp2", 32), Err(MalformedCredential));
        // Every position of the 10-digit chunks, and a bad character anywhere.
        for n in [0u64, 1, 61, 62, 62u64.pow(9), 62u64.pow(10) - 1, 62u64.pow(10), u64::MAX] {
            let text = base62_encode(&n.to_be_bytes(), 11);
            assert_eq!(decode(&text, 8), Ok(n.to_be_bytes().to_vec()), "{n}");
        }
        assert_eq!(decode("00000000000-", 8), Err(MalformedCredential));
    }

    #[test]
    fn every_byte_decodes_as_its_base62_digit_or_not_at_all() {
        for c in 0..=u8::MAX {
            let (digit, is_digit) = base62_digit(c);
            match BASE62.iter().position(|&d| d == c) {
                Some(value) => assert_eq!((digit, is_digit), (value as u64, true), "{c}"),
                None => assert!(!is_digit, "{c} is not a base62 digit"),
            }
        }
        // Long inputs overflow whatever their digits, however many limbs they would need.
        let mut out = [0u8; 8];
        assert_eq!(base62_decode(&[b'1'; 40], &mut out), Err(MalformedCredential));
        assert_eq!(base62_decode(&[b'0'; 40], &mut out), Ok(()));
        assert_eq!(out, [0; 8]);
    }

    /// base62 decoding the plain way: a big number in bytes, one digit at a time.
    fn reference_decode(text: &[u8], len: usize) -> Result<Vec<u8>, MalformedCredential> {
        let mut number = [0u8; 80];
        for &c in text {
            let digit = BASE62.iter().position(|&d| d == c).ok_or(MalformedCredential)?;
            let mut carry = digit as u32;
            for byte in number.iter_mut().rev() {
                let acc = u32::from(*byte) * 62 + carry;
                *byte = acc as u8;
                carry = acc >> 8;
            }
        }
        let (excess, value) = number.split_at(number.len() - len);
        if excess.iter().any(|&b| b != 0) { Err(MalformedCredential) } else { Ok(value.to_vec()) }
    }

    #[test]
    fn base62_decoding_agrees_with_the_plain_way() {
        // xorshift: reproducible inputs without a dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let len = [4, 8, 32, 48][round % 4];
            let width = 1 + (next() % 70) as usize;
            let text: Vec<u8> = (0..width)
                .map(|_| match next() % 100 {
                    // Mostly digits, sometimes a character that is not one.
                    0 => b"-_ /.:{`@~"[(next() % 10) as usize],
                    _ => BASE62[(next() % 62) as usize],
                })
                .collect();
            let mut out = vec![0u8; len];
            let ours = base62_decode(&text, &mut out).map(|()| out);
            assert_eq!(ours, reference_decode(&text, len), "{:?} into {len} bytes", String::from_utf8_lossy(&text));
        }
        // The token body's edge: 2^384 - 1 fits in 48 bytes, 2^384 does not.
        let max = base62_encode(&[0xff; 48], 65);
        let mut out = [0u8; 48];
        assert_eq!(base62_decode(max.as_bytes(), &mut out), Ok(()));
        assert_eq!(out, [0xff; 48]);
        let mut over = max.into_bytes();
        let last = over.len() - 1;
        over[last] = BASE62[BASE62.iter().position(|&d| d == over[last]).unwrap() + 1];
        assert_eq!(base62_decode(&over, &mut out), Err(MalformedCredential));
    }

    #[test]
    fn every_single_character_typo_is_caught_by_the_checksum() {
        let token = credential().token();
        for i in TOKEN_PREFIX.len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(Credential::from_token(&typo), Err(MalformedCredential), "position {i}");
        }
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let token = credential().token();
        for bad in [
            String::new(),
            "apk_".to_owned(),
            token[..token.len() - 1].to_owned(),
            format!("{token}x"),
            token.replacen("apk_", "apx_", 1),
            format!("apk_{}", "!".repeat(TOKEN_CHARS - 4)),
            "x".repeat(10_000),
        ] {
            assert_eq!(Credential::from_token(&bad), Err(MalformedCredential), "{bad:.20}");
        }
    }

    #[test]
    fn authorization_header_forms() {
        let cred = credential();
        assert_eq!(Credential::from_authorization(cred.bearer().as_bytes()).unwrap(), cred);
        assert_eq!(Credential::from_authorization(cred.basic().as_bytes()).unwrap(), cred);
        let lower = cred.bearer().replacen("Bearer", "bearer", 1);
        assert_eq!(Credential::from_authorization(lower.as_bytes()).unwrap(), cred);
        for bad in ["", "Bearer", "Token abc", "Basic !!!", "Basic Zm9v", "Bearer apk_x"] {
            assert!(Credential::from_authorization(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Credential::from_authorization(&vec![b'a'; 100_000]).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let cred = credential();
        let debug = format!("{cred:?}");
        assert!(!debug.contains(&cred.secret.expose_text()));
        assert!(debug.contains("redacted"));
    }
}
