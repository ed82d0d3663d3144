//! Two-legged OAuth 1.0a with HMAC-SHA1, the way the original daemon checked requests.
//!
//! The original Image Factory protected its REST API with the python `oauth2` library and
//! its clients sign requests with `requests_oauthlib.OAuth1(key, client_secret=secret)`:
//! a consumer key and secret, no token, the signature in the `Authorization` header.
//! This module checks such requests ([`verify`]) and builds such headers ([`sign`]) so that
//! those clients keep working unchanged.
//!
//! The algorithm is RFC 5849:
//! 1. collect the parameters from the `Authorization` header, the query string and a
//!    form-encoded body;
//! 2. percent-encode names and values, sort them, join them as `name=value&...`
//!    (leaving out `oauth_signature` and `realm`);
//! 3. the signature base string is `METHOD&enc(base URL)&enc(normalized parameters)`;
//! 4. the signature is `base64(HMAC-SHA1(enc(consumer secret) + "&", base string))`
//!    (two-legged: the token secret after the `&` is empty).
//!
//! Replays are refused (the original accepted them within its timestamp window): a
//! request whose timestamp is more than the window (300 s) from the server's clock is
//! refused, and so is one whose (consumer key, nonce, timestamp) an accepted request
//! already used; [`NonceCache`] remembers those for as long as the window lets them in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use base64::Engine as _;
use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ring::hmac;

/// The one signature method the original accepted.
const SIGNATURE_METHOD: &str = "HMAC-SHA1";

/// How far a request's timestamp may be from the server's clock, in seconds.
/// 300 s is the window python `oauth2` used, so clients that worked then work now.
pub const TIMESTAMP_WINDOW_SECS: u64 = 300;

/// How many (consumer key, nonce, timestamp) triples the daemon remembers at most.
/// An entry is a few dozen bytes plus its key and nonce, so this bounds the cache to
/// some tens of MiB even when every slot holds the longest nonce allowed.
pub const DEFAULT_NONCE_CAPACITY: usize = 100_000;

/// The longest `oauth_nonce` accepted (python `oauth2` sent 8 digits, oauthlib 30
/// characters); a longer one would let a client make each remembered entry large.
pub const MAX_NONCE_BYTES: usize = 255;

/// RFC 5849 §3.6: everything except the unreserved characters `A-Z a-z 0-9 - . _ ~` is
/// percent-encoded, with upper-case hex. Any other encoding changes the base string and
/// so the signature.
const OAUTH_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// What [`verify`] needs to know about one HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct OAuthRequest<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// `scheme://host[:port]/path` as the client addressed it, without the query.
    pub url: &'a str,
    /// The raw query string (without the `?`), if any.
    pub query: Option<&'a str>,
    /// The raw `Authorization` header value, if any.
    pub authorization: Option<&'a str>,
    /// The raw body, only when `Content-Type` is `application/x-www-form-urlencoded`:
    /// RFC 5849 signs form fields but no other kind of body.
    pub form_body: Option<&'a [u8]>,
}

/// Why a request was refused. The `Display` text is what the client gets as the 401 body,
/// the same words the original used; the reason inside [`OAuthError::Failed`] is for the log.
/// Neither ever holds a secret or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The request carries no `Authorization` header at all.
    #[error("Unauthorized: missing authorization")]
    Missing,
    /// The request is signed but the signature or one of its fields is not acceptable.
    /// The string says why, for the server log.
    #[error("Unauthorized: authorization failed")]
    Failed(String),
}

impl OAuthError {
    /// The reason to log, more precise than the client-facing `Display` text.
    pub fn log_reason(&self) -> &str {
        match self {
            OAuthError::Missing => "no Authorization header",
            OAuthError::Failed(reason) => reason,
        }
    }
}

fn failed(reason: impl Into<String>) -> OAuthError {
    OAuthError::Failed(reason.into())
}

/// One request parameter, percent-decoded to raw bytes. Bytes rather than `String`
/// because a form body may hold any octets, and RFC 5849 signs octets.
#[derive(Debug, Clone)]
struct Param {
    name: Vec<u8>,
    value: Vec<u8>,
}

/// The (consumer key, nonce, timestamp) triples of accepted requests, each kept until its
/// timestamp falls out of the window (after that the timestamp check refuses a replay by
/// itself), so the same signed request is accepted once.
///
/// Bounded: it holds at most `capacity` triples. Expired ones are forgotten first; when it
/// is still full, a request with a new nonce is **refused** rather than an in-window triple
/// forgotten, since forgetting one would let that captured request be replayed. Only
/// requests whose signature checks are remembered, so filling it takes a consumer's
/// secret; the cost of a full cache is refusals (each logged) until entries expire, at
/// most one window later.
#[derive(Debug)]
pub struct NonceCache {
    window_secs: u64,
    capacity: usize,
    /// (expiry = timestamp + window, consumer key, nonce): ordered by expiry, so expired
    /// triples are popped from the front. The timestamp is implied by the expiry.
    seen: Mutex<BTreeSet<(u64, String, String)>>,
}

impl Default for NonceCache {
    fn default() -> NonceCache {
        NonceCache::new(TIMESTAMP_WINDOW_SECS, DEFAULT_NONCE_CAPACITY)
    }
}

impl NonceCache {
    /// A cache for timestamps within `window_secs` of the clock, holding at most
    /// `capacity` triples (at least one).
    pub fn new(window_secs: u64, capacity: usize) -> NonceCache {
        NonceCache { window_secs, capacity: capacity.max(1), seen: Mutex::new(BTreeSet::new()) }
    }

    /// How far a timestamp may be from the clock, in seconds.
    pub fn window_secs(&self) -> u64 {
        self.window_secs
    }

    /// How many triples are remembered now (expired ones included until the next check).
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers a triple of a request whose timestamp is within the window of `now_unix`;
    /// refuses one seen before, or a new one when the cache is full.
    fn remember(&self, consumer_key: &str, nonce: &str, timestamp: u64, now_unix: u64) -> Result<(), OAuthError> {
        if nonce.len() > MAX_NONCE_BYTES {
            return Err(failed(format!("oauth_nonce is longer than {MAX_NONCE_BYTES} bytes")));
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        while seen.first().is_some_and(|(expiry, _, _)| *expiry < now_unix) {
            seen.pop_first();
        }
        let entry = (timestamp.saturating_add(self.window_secs), consumer_key.to_string(), nonce.to_string());
        if seen.contains(&entry) {
            return Err(failed(format!(
                "replayed request: consumer key {consumer_key:?} already used this oauth_nonce with oauth_timestamp {timestamp}"
            )));
        }
        if seen.len() >= self.capacity {
            return Err(failed(format!(
                "the nonce cache is full ({} requests within {} s); refusing new nonces until entries expire",
                self.capacity, self.window_secs
            )));
        }
        seen.insert(entry);
        Ok(())
    }
}

/// Checks the OAuth signature of a request against the known `clients`
/// (consumer key → consumer secret) and the current time `now_unix` (seconds), and that it
/// is no replay: its timestamp within the window of `nonces`, its (consumer key, nonce,
/// timestamp) not used before. A request that passes is remembered in `nonces`.
///
/// Returns the consumer key that signed the request.
pub fn verify(
    req: &OAuthRequest,
    clients: &BTreeMap<String, String>,
    now_unix: u64,
    nonces: &NonceCache,
) -> Result<String, OAuthError> {
    let header = match req.authorization.map(str::trim) {
        None | Some("") => return Err(OAuthError::Missing),
        Some(header) => header,
    };

    let mut params = parse_authorization_header(header)?;
    if let Some(query) = req.query {
        params.extend(parse_form_urlencoded(query.as_bytes()));
    }
    if let Some(body) = req.form_body {
        params.extend(parse_form_urlencoded(body));
    }

    // The original read the consumer key from the merged request parameters, so a key in
    // the query string counts as much as one in the header.
    let consumer_key = required(&params, "oauth_consumer_key")?;
    let signature_method = required(&params, "oauth_signature_method")?;
    let signature = required(&params, "oauth_signature")?;
    let timestamp = required(&params, "oauth_timestamp")?;
    let nonce = required(&params, "oauth_nonce")?;

    let secret = clients.get(&consumer_key).ok_or_else(|| failed(format!("unknown consumer key {consumer_key:?}")))?;

    if signature_method != SIGNATURE_METHOD {
        return Err(failed(format!("signature method {signature_method:?} is not supported, only {SIGNATURE_METHOD}")));
    }
    if let Some(version) = optional(&params, "oauth_version")? {
        if version != "1.0" {
            return Err(failed(format!("oauth_version {version:?} is not supported, only 1.0")));
        }
    }
    let timestamp = check_timestamp(&timestamp, now_unix, nonces.window_secs())?;

    let base_string = signature_base_string(req.method, req.url, &params);
    let claimed = base64::engine::general_purpose::STANDARD
        .decode(signature.as_bytes())
        .map_err(|_| failed("oauth_signature is not valid base64"))?;
    // ring's verify compares in constant time, so the response time tells an attacker
    // nothing about how many leading bytes of a forged signature were right.
    hmac::verify(&signing_key(secret), base_string.as_bytes(), &claimed)
        .map_err(|_| failed(format!("signature mismatch for consumer key {consumer_key:?}")))?;
    // Only now, with the signature good: a forger can neither fill the cache nor use up
    // a real client's nonce.
    nonces.remember(&consumer_key, &nonce, timestamp, now_unix)?;

    Ok(consumer_key)
}

/// Builds the Authorization header value a client sends (used by tests and by the CLI if it ever talks to a daemon).
///
/// `url` is `scheme://host[:port]/path` and `query` the raw query string the request will
/// carry; both are signed. The header has the same fields in the same order as
/// `requests_oauthlib` sends, with `oauth_version="1.0"`.
pub fn sign(
    method: &str,
    url: &str,
    query: Option<&str>,
    consumer_key: &str,
    consumer_secret: &str,
    nonce: &str,
    timestamp: u64,
) -> String {
    let timestamp = timestamp.to_string();
    let oauth_fields = [
        ("oauth_nonce", nonce),
        ("oauth_timestamp", timestamp.as_str()),
        ("oauth_version", "1.0"),
        ("oauth_signature_method", SIGNATURE_METHOD),
        ("oauth_consumer_key", consumer_key),
    ];

    let mut params: Vec<Param> = oauth_fields
        .iter()
        .map(|(name, value)| Param { name: name.as_bytes().to_vec(), value: value.as_bytes().to_vec() })
        .collect();
    if let Some(query) = query {
        params.extend(parse_form_urlencoded(query.as_bytes()));
    }

    let base_string = signature_base_string(method, url, &params);
    let tag = hmac::sign(&signing_key(consumer_secret), base_string.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());

    let mut fields: Vec<String> =
        oauth_fields.iter().map(|(name, value)| format!("{name}=\"{}\"", encode(value.as_bytes()))).collect();
    fields.push(format!("oauth_signature=\"{}\"", encode(signature.as_bytes())));
    format!("OAuth {}", fields.join(", "))
}

/// RFC 5849 percent-encoding of raw bytes.
fn encode(bytes: &[u8]) -> String {
    percent_encode(bytes, OAUTH_ENCODE_SET).to_string()
}

/// The HMAC key: the encoded consumer secret, `&`, and the (empty) token secret.
fn signing_key(consumer_secret: &str) -> hmac::Key {
    let key = format!("{}&", encode(consumer_secret.as_bytes()));
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes())
}

/// `METHOD&enc(base URL)&enc(normalized parameters)` (RFC 5849 §3.4.1).
fn signature_base_string(method: &str, url: &str, params: &[Param]) -> String {
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_string_uri(url).as_bytes()),
        encode(normalized_parameters(params).as_bytes())
    )
}

/// The base string URI (RFC 5849 §3.4.1.2): lower-case scheme and host, the port only when
/// it is not the scheme's default, the path as sent, no query or fragment.
/// A URL without `scheme://` is used as given: the signature then simply will not match.
fn base_string_uri(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let authority = authority.to_ascii_lowercase();

    // Split off a port, taking care not to split inside an IPv6 literal like "[::1]".
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority.as_str(), None),
    };
    let default_port = match scheme.as_str() {
        "http" => Some("80"),
        "https" => Some("443"),
        _ => None,
    };
    let authority = match port {
        Some(port) if Some(port) != default_port && !port.is_empty() => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

/// Normalized request parameters (RFC 5849 §3.4.1.3.2): every parameter except
/// `oauth_signature` and `realm`, encoded, sorted by name then value, joined with `&`.
fn normalized_parameters(params: &[Param]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .filter(|p| p.name != b"oauth_signature" && p.name != b"realm")
        .map(|p| (encode(&p.name), encode(&p.value)))
        .collect();
    encoded.sort();
    encoded.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// Parses `OAuth name="value", name="value", ...`. Names and values are percent-decoded;
/// `realm` is kept here and dropped later from the signed parameters.
fn parse_authorization_header(header: &str) -> Result<Vec<Param>, OAuthError> {
    let (scheme, rest) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("OAuth") {
        return Err(failed(format!("Authorization scheme {scheme:?} is not OAuth")));
    }

    let mut params = Vec::new();
    let mut rest = rest;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let (name, after_name) =
            rest.split_once('=').ok_or_else(|| failed("malformed Authorization header: a field has no '='"))?;
        let after_name = after_name.trim_start();
        let (value, after_value) = if let Some(quoted) = after_name.strip_prefix('"') {
            quoted.split_once('"').ok_or_else(|| failed("malformed Authorization header: unterminated quote"))?
        } else {
            // Unquoted values are not standard but harmless to accept: they end at a comma.
            after_name.split_once(',').unwrap_or((after_name, ""))
        };
        params.push(Param {
            name: percent_decode(name.trim().as_bytes()).collect(),
            value: percent_decode(value.trim().as_bytes()).collect(),
        });
        rest = after_value;
    }
    Ok(params)
}

/// Parses `application/x-www-form-urlencoded` data (a query string or a form body):
/// `&`-separated `name=value` pairs, `+` meaning space, percent-escapes decoded.
fn parse_form_urlencoded(data: &[u8]) -> Vec<Param> {
    let decode = |raw: &[u8]| -> Vec<u8> {
        let with_spaces: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        percent_decode(&with_spaces).collect()
    };
    data.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &[][..]),
            };
            Param { name: decode(name), value: decode(value) }
        })
        .collect()
}

/// The value of a protocol parameter that may appear at most once.
/// Two different copies (say one in the header, one in the query) would leave it unclear
/// which was signed, so that is refused.
fn optional(params: &[Param], name: &str) -> Result<Option<String>, OAuthError> {
    let mut values = params.iter().filter(|p| p.name == name.as_bytes());
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.any(|other| other.value != first.value) {
        return Err(failed(format!("{name} is given more than once")));
    }
    Ok(Some(String::from_utf8_lossy(&first.value).into_owned()))
}

/// Like [`optional`], but the parameter must be there.
fn required(params: &[Param], name: &str) -> Result<String, OAuthError> {
    optional(params, name)?.ok_or_else(|| failed(format!("{name} is missing")))
}

/// Refuses timestamps further than `window` seconds from `now_unix`, in either direction,
/// so a captured request stops working after a few minutes. Returns the timestamp.
fn check_timestamp(timestamp: &str, now_unix: u64, window: u64) -> Result<u64, OAuthError> {
    let ts: u64 = timestamp.parse().map_err(|_| failed(format!("oauth_timestamp {timestamp:?} is not a number")))?;
    if ts.abs_diff(now_unix) > window {
        return Err(failed(format!("oauth_timestamp {ts} is more than {window} s from the server time {now_unix}")));
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "mock-key";
    const SECRET: &str = "mock-secret";

    fn clients() -> BTreeMap<String, String> {
        BTreeMap::from([(KEY.to_string(), SECRET.to_string())])
    }

    fn get(url: &str, query: Option<&str>, authorization: Option<&str>) -> Result<String, OAuthError> {
        let req = OAuthRequest { method: "GET", url, query, authorization, form_body: None };
        verify(&req, &clients(), 1_191_242_096, &NonceCache::default())
    }

    // Known answer computed independently with python oauthlib 3.x:
    //   Client('mock-key', client_secret='mock-secret', nonce='kllo9940pd9333jh',
    //          timestamp='1191242096').sign(
    //     'http://Example.COM:80/imagefactory/base_images?b=x%20y&a=2&a=1&c=%7E')
    // and cross-checked by hand with Python's hmac/hashlib over the base string
    //   GET&http%3A%2F%2Fexample.com%2Fimagefactory%2Fbase_images&a%3D1%26a%3D2%26b%3Dx%2520y...
    const KAT_URL: &str = "http://Example.COM:80/imagefactory/base_images";
    const KAT_QUERY: &str = "b=x%20y&a=2&a=1&c=%7E";
    const KAT_HEADER: &str = "OAuth oauth_nonce=\"kllo9940pd9333jh\", oauth_timestamp=\"1191242096\", \
        oauth_version=\"1.0\", oauth_signature_method=\"HMAC-SHA1\", oauth_consumer_key=\"mock-key\", \
        oauth_signature=\"lyBqAqnIfq29MxFYgi6jcvuRZRE%3D\"";

    #[test]
    fn sign_matches_oauthlib_known_answer() {
        let header = sign("GET", KAT_URL, Some(KAT_QUERY), KEY, SECRET, "kllo9940pd9333jh", 1_191_242_096);
        assert_eq!(header, KAT_HEADER);
    }

    #[test]
    fn verify_accepts_oauthlib_known_answer() {
        assert_eq!(get(KAT_URL, Some(KAT_QUERY), Some(KAT_HEADER)), Ok(KEY.to_string()));
    }

    #[test]
    fn verify_accepts_oauthlib_signed_form_post() {
        // python oauthlib, POST with Content-Type application/x-www-form-urlencoded.
        let header = "OAuth oauth_nonce=\"n0nce\", oauth_timestamp=\"1700000000\", \
            oauth_version=\"1.0\", oauth_signature_method=\"HMAC-SHA1\", \
            oauth_consumer_key=\"mock-key\", oauth_signature=\"EZaeslE8JVOhIxSGGxo%2BSvAj9KE%3D\"";
        let body = b"template=%3Ctemplate%3E+x&parameters=%7B%7D";
        let mut req = OAuthRequest {
            method: "POST",
            url: "https://localhost:8075/imagefactory/base_images",
            query: None,
            authorization: Some(header),
            form_body: Some(body),
        };
        assert_eq!(verify(&req, &clients(), 1_700_000_000, &NonceCache::default()), Ok(KEY.to_string()));

        // The form fields are signed: a changed field breaks the signature.
        req.form_body = Some(b"template=%3Cevil%3E&parameters=%7B%7D");
        assert!(matches!(verify(&req, &clients(), 1_700_000_000, &NonceCache::default()), Err(OAuthError::Failed(_))));
    }

    #[test]
    fn round_trip_sign_then_verify() {
        let url = "https://localhost:8075/imagefactory/target_images";
        let query = "filter=a+b&x=%2F";
        let header = sign("get", url, Some(query), KEY, SECRET, "abc123", 1_191_242_100);
        assert_eq!(get(url, Some(query), Some(&header)), Ok(KEY.to_string()));
    }

    #[test]
    fn default_port_and_case_do_not_change_the_signature() {
        let header = sign("GET", "HTTPS://LocalHost:443/imagefactory", None, KEY, SECRET, "n", 1_191_242_096);
        assert_eq!(get("https://localhost/imagefactory", None, Some(&header)), Ok(KEY.to_string()));
        // A non-default port is part of the signed URL.
        assert!(get("https://localhost:8075/imagefactory", None, Some(&header)).is_err());
    }

    #[test]
    fn wrong_secret_is_refused_without_leaking_it() {
        let url = "http://localhost:8075/imagefactory/base_images";
        let header = sign("GET", url, None, KEY, "not-the-secret", "n", 1_191_242_096);
        let err = get(url, None, Some(&header)).unwrap_err();
        assert!(matches!(err, OAuthError::Failed(_)));
        assert_eq!(err.to_string(), "Unauthorized: authorization failed");
        let reason = err.log_reason();
        assert!(reason.contains("signature mismatch"), "{reason}");
        assert!(!reason.contains(SECRET) && !reason.contains("not-the-secret"));
        assert!(!reason.contains("oauth_signature="));
    }

    #[test]
    fn unknown_consumer_key_is_refused() {
        let url = "http://localhost:8075/imagefactory/base_images";
        let header = sign("GET", url, None, "other-key", SECRET, "n", 1_191_242_096);
        let err = get(url, None, Some(&header)).unwrap_err();
        assert!(err.log_reason().contains("unknown consumer key"), "{err:?}");
    }

    #[test]
    fn tampered_query_is_refused() {
        let url = "http://localhost:8075/imagefactory/base_images";
        let header = sign("GET", url, Some("id=1"), KEY, SECRET, "n", 1_191_242_096);
        assert!(get(url, Some("id=1"), Some(&header)).is_ok());
        let err = get(url, Some("id=2"), Some(&header)).unwrap_err();
        assert!(err.log_reason().contains("signature mismatch"), "{err:?}");
    }

    #[test]
    fn tampered_method_or_path_is_refused() {
        let url = "http://localhost:8075/imagefactory/base_images";
        let header = sign("GET", url, None, KEY, SECRET, "n", 1_191_242_096);
        let delete = OAuthRequest { method: "DELETE", url, query: None, authorization: Some(&header), form_body: None };
        assert!(verify(&delete, &clients(), 1_191_242_096, &NonceCache::default()).is_err());
        assert!(get("http://localhost:8075/imagefactory/plugins", None, Some(&header)).is_err());
    }

    #[test]
    fn stale_or_future_timestamp_is_refused() {
        let url = "http://localhost:8075/imagefactory";
        let now = 1_191_242_096;
        let within = sign("GET", url, None, KEY, SECRET, "n", now - TIMESTAMP_WINDOW_SECS);
        assert!(get(url, None, Some(&within)).is_ok());

        let stale = sign("GET", url, None, KEY, SECRET, "n", now - TIMESTAMP_WINDOW_SECS - 1);
        let err = get(url, None, Some(&stale)).unwrap_err();
        assert!(err.log_reason().contains("oauth_timestamp"), "{err:?}");

        let future = sign("GET", url, None, KEY, SECRET, "n", now + TIMESTAMP_WINDOW_SECS + 1);
        assert!(get(url, None, Some(&future)).is_err());
    }

    fn get_with(nonces: &NonceCache, header: &str, now: u64) -> Result<String, OAuthError> {
        let url = "http://localhost:8075/imagefactory/plugins";
        let req = OAuthRequest { method: "GET", url, query: None, authorization: Some(header), form_body: None };
        verify(&req, &clients(), now, nonces)
    }

    fn signed(nonce: &str, ts: u64) -> String {
        sign("GET", "http://localhost:8075/imagefactory/plugins", None, KEY, SECRET, nonce, ts)
    }

    #[test]
    fn a_replayed_request_is_refused() {
        let nonces = NonceCache::default();
        let now = 1_700_000_000;
        let header = signed("once", now);
        assert_eq!(get_with(&nonces, &header, now), Ok(KEY.to_string()));
        let err = get_with(&nonces, &header, now + 1).unwrap_err();
        assert_eq!(err.to_string(), "Unauthorized: authorization failed");
        assert!(err.log_reason().starts_with("replayed request"), "{err:?}");
        // Another nonce, or the same nonce with another timestamp, is another request.
        assert!(get_with(&nonces, &signed("twice", now), now).is_ok());
        assert!(get_with(&nonces, &signed("once", now + 1), now + 1).is_ok());
        // After the window the timestamp check refuses the replay by itself.
        let err = get_with(&nonces, &header, now + TIMESTAMP_WINDOW_SECS + 1).unwrap_err();
        assert!(err.log_reason().contains("oauth_timestamp"), "{err:?}");
    }

    #[test]
    fn a_forged_request_does_not_use_up_a_nonce() {
        let nonces = NonceCache::default();
        let now = 1_700_000_000;
        let forged = sign("GET", "http://localhost:8075/imagefactory/plugins", None, KEY, "guess", "n1", now);
        assert!(get_with(&nonces, &forged, now).is_err());
        assert!(nonces.is_empty());
        assert!(get_with(&nonces, &signed("n1", now), now).is_ok());
    }

    #[test]
    fn the_nonce_cache_is_bounded_and_refuses_rather_than_forgets() {
        let window = 10;
        let nonces = NonceCache::new(window, 2);
        let now = 1_700_000_000;
        let req = |nonce: &str, ts: u64, at: u64| {
            let header = signed(nonce, ts);
            let url = "http://localhost:8075/imagefactory/plugins";
            let r = OAuthRequest { method: "GET", url, query: None, authorization: Some(&header), form_body: None };
            verify(&r, &clients(), at, &nonces)
        };
        assert!(req("a", now, now).is_ok());
        assert!(req("b", now + 5, now).is_ok());
        // Full: a new nonce is refused, and the remembered ones still count.
        let err = req("c", now, now).unwrap_err();
        assert!(err.log_reason().contains("full"), "{err:?}");
        assert!(req("a", now, now).unwrap_err().log_reason().starts_with("replayed"));
        assert_eq!(nonces.len(), 2);
        // Once "a" (timestamp now) is out of the window it is forgotten, making room;
        // "b" (timestamp now + 5) is still in it and still refused.
        assert!(req("c", now + window + 1, now + window + 1).is_ok());
        assert!(req("b", now + 5, now + window + 1).unwrap_err().log_reason().starts_with("replayed"));
        assert_eq!(nonces.len(), 2);
        // An overlong nonce is refused outright.
        let long = "x".repeat(MAX_NONCE_BYTES + 1);
        assert!(req(&long, now + 20, now + 20).unwrap_err().log_reason().contains("longer"));
    }

    #[test]
    fn missing_header_is_reported_as_missing() {
        let url = "http://localhost:8075/imagefactory";
        assert_eq!(get(url, None, None), Err(OAuthError::Missing));
        assert_eq!(get(url, None, Some("  ")), Err(OAuthError::Missing));
        assert_eq!(OAuthError::Missing.to_string(), "Unauthorized: missing authorization");
    }

    #[test]
    fn other_schemes_and_missing_fields_fail() {
        let url = "http://localhost:8075/imagefactory";
        let err = get(url, None, Some("Basic bW9jay1rZXk6bW9jay1zZWNyZXQ=")).unwrap_err();
        assert!(err.log_reason().contains("not OAuth"), "{err:?}");

        let no_nonce = KAT_HEADER.replace("oauth_nonce=\"kllo9940pd9333jh\", ", "");
        let err = get(KAT_URL, Some(KAT_QUERY), Some(&no_nonce)).unwrap_err();
        assert_eq!(err.log_reason(), "oauth_nonce is missing");
    }

    #[test]
    fn consumer_key_may_come_from_the_query() {
        // The original read oauth_consumer_key from the merged request parameters.
        // Signature computed by hand with Python's hmac/hashlib over the parameters
        // below plus oauth_consumer_key=mock-key from the query.
        let url = "http://localhost:8075/imagefactory";
        let header = "OAuth oauth_nonce=\"n\", oauth_timestamp=\"1191242096\", \
            oauth_version=\"1.0\", oauth_signature_method=\"HMAC-SHA1\", \
            oauth_signature=\"iPZHe603iNsTKpCa3VD4cSQn0JA%3D\"";
        assert_eq!(get(url, Some("oauth_consumer_key=mock-key"), Some(header)), Ok(KEY.to_string()));
        // Without the query there is no consumer key at all.
        let err = get(url, None, Some(header)).unwrap_err();
        assert_eq!(err.log_reason(), "oauth_consumer_key is missing");
    }

    #[test]
    fn other_signature_methods_and_versions_are_refused() {
        let plaintext = KAT_HEADER.replace("HMAC-SHA1", "PLAINTEXT");
        let err = get(KAT_URL, Some(KAT_QUERY), Some(&plaintext)).unwrap_err();
        assert!(err.log_reason().contains("signature method"), "{err:?}");

        let v2 = KAT_HEADER.replace("oauth_version=\"1.0\"", "oauth_version=\"2.0\"");
        let err = get(KAT_URL, Some(KAT_QUERY), Some(&v2)).unwrap_err();
        assert!(err.log_reason().contains("oauth_version"), "{err:?}");
    }

    #[test]
    fn conflicting_duplicate_protocol_parameters_are_refused() {
        let err =
            get(KAT_URL, Some("b=x%20y&a=2&a=1&c=%7E&oauth_consumer_key=someone-else"), Some(KAT_HEADER)).unwrap_err();
        assert!(err.log_reason().contains("more than once"), "{err:?}");
    }

    #[test]
    fn base_string_uri_normalization() {
        assert_eq!(base_string_uri("HTTP://Example.COM:80/a/B?q=1"), "http://example.com/a/B");
        assert_eq!(base_string_uri("https://[::1]:8075"), "https://[::1]:8075/");
        assert_eq!(base_string_uri("https://[::1]:443/x"), "https://[::1]/x");
        assert_eq!(base_string_uri("http://h:8075/x#frag"), "http://h:8075/x");
    }
}
