//! The vSphere Web Services transport: SOAP 1.1 over HTTP(S) to `<endpoint>/sdk`, in the
//! `urn:vim25` namespace, with the session cookie vCenter sets at login.
//!
//! Answers are read with namespaces resolved (the simulator writes
//! `XMLSchema-instance:type`, vCenter `xsi:type`: both are the same attribute once
//! resolved) into a small owned tree, [`Elem`], so callers never hold a borrowed
//! document. A SOAP fault becomes [`VimError::Fault`] with the fault's type
//! (`InvalidLogin`, `FileNotFound`, ...) and its message, in one line.

use std::io::Read;
use std::sync::Mutex;

use cloudkit::http::TlsTrust;
use cloudkit::Secret;
use ureq::Agent;

const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The API version the requests are written for (vSphere 6.5; later servers accept it).
pub const API_VERSION: &str = "6.5";
/// At most this much of a SOAP answer is read (property answers for a few objects are a
/// few KiB; the limit keeps a broken server from exhausting memory).
const ANSWER_LIMIT: u64 = 32 << 20;

/// What went wrong talking to vSphere. One line; never a credential.
#[derive(Debug, thiserror::Error)]
pub enum VimError {
    #[error("cannot reach vSphere at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("vSphere refused {method}: {fault}: {message}")]
    Fault { method: String, fault: String, message: String },
    #[error("vSphere answered {method} with HTTP {status}: {detail}")]
    Http { method: String, status: u16, detail: String },
    #[error("vSphere gave an unreadable answer to {method}: {detail}")]
    BadAnswer { method: String, detail: String },
    #[error("{0}")]
    NotFound(String),
    #[error("vSphere task {task} failed: {message}")]
    Task { task: String, message: String },
    #[error("vSphere task {task} did not finish within {secs} s")]
    TaskTimeout { task: String, secs: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("uploading {path} to the datastore failed after {attempts} tries: {detail}")]
    Upload { path: String, attempts: u32, detail: String },
    #[error("cancelled")]
    Cancelled,
}

impl VimError {
    /// The fault type, when vSphere answered with a SOAP fault.
    pub fn fault(&self) -> Option<&str> {
        match self {
            VimError::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }
}

/// An XML element of an answer, owned: local name, `xsi:type`, `type` attribute (managed
/// object references carry their type there), text, children.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Elem {
    pub name: String,
    pub xsi_type: Option<String>,
    pub type_attr: Option<String>,
    pub text: String,
    pub children: Vec<Elem>,
}

impl Elem {
    fn from_node(n: roxmltree::Node) -> Elem {
        let mut e = Elem {
            name: n.tag_name().name().to_string(),
            xsi_type: n.attribute((XSI, "type")).map(|t| t.rsplit(':').next().unwrap_or(t).to_string()),
            // By hand: the plain `type` (a reference's kind), never `xsi:type`.
            type_attr: n
                .attributes()
                .find(|a| a.name() == "type" && a.namespace().is_none())
                .map(|a| a.value().to_string()),
            ..Default::default()
        };
        for c in n.children() {
            if c.is_element() {
                e.children.push(Elem::from_node(c));
            } else if c.is_text() {
                e.text.push_str(c.text().unwrap_or(""));
            }
        }
        e.text = e.text.trim().to_string();
        e
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The text of the element at the `/`-separated path of child names.
    pub fn text_at(&self, path: &str) -> Option<&str> {
        let mut e = self;
        for part in path.split('/') {
            e = e.child(part)?;
        }
        Some(e.text.as_str())
    }

    /// Every descendant (this element included) in document order.
    pub fn descendants(&self) -> Vec<&Elem> {
        let mut out = vec![self];
        let mut i = 0;
        while i < out.len() {
            let e = out[i];
            out.extend(e.children.iter());
            i += 1;
        }
        out
    }

    /// This element as a managed object reference.
    pub fn moref(&self) -> Option<MoRef> {
        Some(MoRef { kind: self.type_attr.clone()?, value: self.text.clone() })
    }
}

/// A managed object reference: `<_this type="Folder">group-d1</_this>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MoRef {
    pub kind: String,
    pub value: String,
}

impl MoRef {
    pub fn new(kind: &str, value: &str) -> MoRef {
        MoRef { kind: kind.to_string(), value: value.to_string() }
    }

    /// `<tag type="Kind">value</tag>`.
    pub fn xml(&self, tag: &str) -> String {
        format!("<{tag} type=\"{}\">{}</{tag}>", esc(&self.kind), esc(&self.value))
    }
}

impl std::fmt::Display for MoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// Escapes text for an XML element or attribute.
pub use imagefactory_plugin_api::xml::escape as esc;

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A connection to one vSphere endpoint, with the session cookie once logged in.
pub struct Soap {
    agent: Agent,
    /// `scheme://host[:port]`, without a path.
    base: String,
    /// The session cookie (`vmware_soap_session=...`): a credential while it lives.
    cookie: Mutex<Option<Secret>>,
}

impl Soap {
    /// A client for the server at `base` (`https://vcenter.example.com`, no path) that
    /// accepts the certificates `trust` accepts. Fails only on a TLS set-up error.
    pub fn new(base: &str, trust: &TlsTrust) -> Result<Soap, VimError> {
        let product = concat!("imagefactory-vsphere/", env!("CARGO_PKG_VERSION"));
        let agent = cloudkit::http::agent(product, trust)
            .map_err(|detail| VimError::Unreachable { endpoint: base.to_string(), detail })?;
        Ok(Soap { agent, base: base.trim_end_matches('/').to_string(), cookie: Mutex::new(None) })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The session cookie header value, when logged in.
    pub fn cookie(&self) -> Option<Secret> {
        self.cookie.lock().ok().and_then(|c| c.clone())
    }

    pub fn forget_session(&self) {
        if let Ok(mut c) = self.cookie.lock() {
            *c = None;
        }
    }

    /// Calls `method` with the request body `inner` (the elements inside the method
    /// element) and returns the answer's `<returnval>`s parent (`<METHODResponse>`).
    pub fn call(&self, method: &str, inner: &str) -> Result<Elem, VimError> {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soapenv:Envelope xmlns:soapenv=\"{SOAP_ENV}\" xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
             xmlns:xsi=\"{XSI}\"><soapenv:Body><{method} xmlns=\"urn:vim25\">{inner}</{method}></soapenv:Body>\
             </soapenv:Envelope>"
        );
        let mut req = self
            .agent
            .post(&format!("{}/sdk", self.base))
            .set("Content-Type", "text/xml; charset=utf-8")
            .set("SOAPAction", &format!("urn:vim25/{API_VERSION}"));
        if let Some(c) = self.cookie() {
            req = req.set("Cookie", c.expose());
        }
        let resp = match req.send_string(&body) {
            Ok(r) => r,
            // vSphere answers faults with HTTP 500 and a SOAP body.
            Err(ureq::Error::Status(status, r)) => {
                let text =
                    read_limited(r).map_err(|detail| VimError::Http { method: method.to_string(), status, detail })?;
                return match parse_answer(method, &text) {
                    Err(e @ VimError::Fault { .. }) => Err(e),
                    _ => Err(VimError::Http {
                        method: method.to_string(),
                        status,
                        detail: one_line(&text).chars().take(300).collect(),
                    }),
                };
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(VimError::Unreachable {
                    endpoint: self.base.clone(),
                    detail: cloudkit::http::transport_detail(&t),
                })
            }
        };
        if let Some(set) = resp.header("Set-Cookie") {
            if let Some(pair) = set.split(';').next().filter(|p| p.trim().starts_with("vmware_soap_session=")) {
                if let Ok(mut c) = self.cookie.lock() {
                    *c = Some(Secret::new(pair.trim()));
                }
            }
        }
        let text = read_limited(resp).map_err(|detail| VimError::BadAnswer { method: method.to_string(), detail })?;
        parse_answer(method, &text)
    }
}

fn read_limited(resp: ureq::Response) -> Result<String, String> {
    let mut text = String::new();
    resp.into_reader().take(ANSWER_LIMIT).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Reads a SOAP answer: the body's first element, or the fault it carries.
pub fn parse_answer(method: &str, text: &str) -> Result<Elem, VimError> {
    let bad = |detail: String| VimError::BadAnswer { method: method.to_string(), detail };
    let opts = roxmltree::ParsingOptions { allow_dtd: false, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| bad(e.to_string()))?;
    let body = doc
        .root_element()
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "Body")
        .ok_or_else(|| bad("no SOAP Body".into()))?;
    let first = body.children().find(|n| n.is_element()).ok_or_else(|| bad("an empty SOAP Body".into()))?;
    if first.tag_name().name() == "Fault" {
        let fault = Elem::from_node(first);
        let message = fault.text_at("faultstring").unwrap_or("no message").to_string();
        let kind = fault
            .child("detail")
            .and_then(|d| d.children.first())
            .map(|d| d.xsi_type.clone().unwrap_or_else(|| d.name.trim_end_matches("Fault").to_string()))
            .unwrap_or_else(|| "Fault".to_string());
        return Err(VimError::Fault { method: method.to_string(), fault: kind, message: one_line(&message) });
    }
    Ok(Elem::from_node(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_one_line_with_their_type() {
        let text = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>
 <faultcode>ServerFaultCode</faultcode><faultstring>Login failure:
 bad</faultstring><detail><InvalidLoginFault xmlns="urn:vim25" XMLSchema-instance:type="InvalidLogin"></InvalidLoginFault></detail>
 </soapenv:Fault></soapenv:Body></soapenv:Envelope>"#;
        let e = parse_answer("Login", text).unwrap_err();
        assert_eq!(e.fault(), Some("InvalidLogin"));
        assert_eq!(e.to_string(), "vSphere refused Login: InvalidLogin: Login failure: bad");
    }

    #[test]
    fn answers_become_owned_trees() {
        let text = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><XResponse xmlns="urn:vim25">
 <returnval><obj xsi:type="ManagedObjectReference" type="Datastore">datastore-1</obj><propSet><name>name</name><val xsi:type="xsd:string">ds &amp; co</val></propSet></returnval>
 </XResponse></soapenv:Body></soapenv:Envelope>"#;
        let r = parse_answer("X", text).unwrap();
        let rv = r.child("returnval").unwrap();
        assert_eq!(rv.child("obj").unwrap().moref(), Some(MoRef::new("Datastore", "datastore-1")));
        let val = rv.child("propSet").unwrap().child("val").unwrap();
        assert_eq!((val.text.as_str(), val.xsi_type.as_deref()), ("ds & co", Some("string")));
        assert_eq!(esc("a<b&\"c"), "a&lt;b&amp;&quot;c");
    }
}
