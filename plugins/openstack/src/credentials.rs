//! The original's OpenStack `provider_credentials` XML, and how it authenticates.
//!
//! ```xml
//! <provider_credentials>
//!   <openstack_credentials>
//!     <username>admin</username>
//!     <password>secret</password>
//!     <tenant>demo</tenant>                  <!-- or <project> -->
//!     <auth_url>http://keystone:5000/v3</auth_url>
//!     <strategy>keystone</strategy>          <!-- keystone (default) | token | noauth -->
//!     <token>gAAAA...</token>                <!-- a pre-issued token -->
//!     <user_domain>Default</user_domain>     <!-- optional, Keystone v3 -->
//!     <project_domain>Default</project_domain>
//!   </openstack_credentials>
//! </provider_credentials>
//! ```
//!
//! How the strategy is chosen (the original's glance client had the same three):
//! - `noauth`: no token is sent. For a Glance run without Keystone (the tests' Glance).
//!   Chosen only explicitly, so a missing password is never silently treated as noauth.
//! - `token`, or no strategy with a `<token>` and no `<password>`: the token is sent as
//!   `X-Auth-Token` as it is.
//! - `keystone`, or no strategy with a `<password>`: Keystone v3 password authentication
//!   (the original's Keystone v2.0 is gone from OpenStack) scoped to the project named by
//!   `<tenant>`, giving the token sent to Glance.
//!
//! The password and the token live in [`Secret`], which never prints itself, and no
//! error message here quotes any part of the document: a malformed document is reported
//! by line and column only, because the malformed part may be the password.

use roxmltree::Document;

pub use cloudkit::Secret;

/// How requests to Glance are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Send no token (Glance without Keystone).
    NoAuth,
    /// Send this pre-issued token.
    Token(Secret),
    /// Get a token from Keystone v3 with a password.
    Keystone(KeystonePassword),
}

/// Keystone v3 password authentication, scoped to a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystonePassword {
    /// The Keystone URL as given (`http://host:5000`, `.../v3`).
    pub auth_url: String,
    pub username: String,
    pub password: Secret,
    pub project: String,
    pub user_domain: String,
    pub project_domain: String,
}

/// The parsed credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub auth: Auth,
    /// The user name, when given: recorded as the provider account (it is not secret).
    pub username: Option<String>,
}

/// Why the credentials cannot be used. Messages never contain credential values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OpenStack credentials: {0}")]
pub struct CredentialsError(String);

const KNOWN: &[&str] = &[
    "username",
    "password",
    "tenant",
    "project",
    "project_name",
    "auth_url",
    "strategy",
    "token",
    "user_domain",
    "user_domain_name",
    "project_domain",
    "project_domain_name",
];

/// Parses a `provider_credentials` document (or a bare `openstack_credentials` one).
pub fn parse(xml: &str) -> Result<Credentials, CredentialsError> {
    let err = |m: String| CredentialsError(m);
    let doc = Document::parse(xml).map_err(|e| {
        let pos = e.pos();
        err(format!("not well-formed XML (error at line {}, column {})", pos.row, pos.col))
    })?;
    let root = doc.root_element();
    let creds = if root.has_tag_name("openstack_credentials") {
        root
    } else {
        if !root.has_tag_name("provider_credentials") {
            return Err(err(format!(
                "the document's root is <{}>, expected <provider_credentials><openstack_credentials>",
                root.tag_name().name()
            )));
        }
        root.children()
            .find(|n| n.has_tag_name("openstack_credentials"))
            .ok_or_else(|| err("no <openstack_credentials> element inside <provider_credentials>".to_string()))?
    };
    let mut values: Vec<(&str, String)> = Vec::new();
    for child in creds.children().filter(|n| n.is_element()) {
        let name = child.tag_name().name();
        if !KNOWN.contains(&name) {
            return Err(err(format!(
                "unknown element <{name}> in <openstack_credentials> (known: {})",
                KNOWN.join(", ")
            )));
        }
        if values.iter().any(|(n, _)| *n == name) {
            return Err(err(format!("<{name}> is given twice")));
        }
        let text: String = child.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
        values.push((name, text.trim().to_string()));
    }
    let get = |names: &[&str]| -> Option<String> {
        values.iter().find(|(n, v)| names.contains(n) && !v.is_empty()).map(|(_, v)| v.clone())
    };
    let username = get(&["username"]);
    let password = get(&["password"]);
    let token = get(&["token"]);
    let strategy = get(&["strategy"]).map(|s| s.to_ascii_lowercase());

    let auth = match strategy.as_deref() {
        Some("noauth") => Auth::NoAuth,
        Some("token") => Auth::Token(Secret::new(
            token.ok_or_else(|| err("<strategy>token</strategy> needs a <token>".to_string()))?,
        )),
        Some("keystone") | None => match (password, token) {
            (Some(password), _) => {
                let missing: Vec<&str> = [("auth_url", get(&["auth_url"]).is_none()), ("username", username.is_none())]
                    .into_iter()
                    .chain([("tenant", get(&["tenant", "project", "project_name"]).is_none())])
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| n)
                    .collect();
                if !missing.is_empty() {
                    return Err(err(format!(
                        "Keystone password authentication needs {}",
                        missing.iter().map(|m| format!("<{m}>")).collect::<Vec<_>>().join(", ")
                    )));
                }
                Auth::Keystone(KeystonePassword {
                    auth_url: get(&["auth_url"]).unwrap_or_default(),
                    username: username.clone().unwrap_or_default(),
                    password: Secret::new(password),
                    project: get(&["tenant", "project", "project_name"]).unwrap_or_default(),
                    user_domain: get(&["user_domain", "user_domain_name"]).unwrap_or_else(|| "Default".into()),
                    project_domain: get(&["project_domain", "project_domain_name"]).unwrap_or_else(|| "Default".into()),
                })
            }
            (None, Some(token)) => Auth::Token(Secret::new(token)),
            (None, None) => {
                return Err(err("give a <password> (with <auth_url>, <username> and <tenant>), a <token>, \
                     or <strategy>noauth</strategy>"
                    .to_string()))
            }
        },
        Some(other) => {
            return Err(err(format!("unknown <strategy> {other:?} (use keystone, token or noauth)")));
        }
    };
    Ok(Credentials { auth, username })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(inner: &str) -> String {
        format!("<provider_credentials><openstack_credentials>{inner}</openstack_credentials></provider_credentials>")
    }

    #[test]
    fn keystone_password_with_defaults() {
        let c = parse(&wrap(
            "<username>u</username><password> s3cret </password><tenant>demo</tenant>\
             <auth_url>http://ks:5000/v3</auth_url>",
        ))
        .unwrap();
        let Auth::Keystone(k) = &c.auth else { panic!("expected keystone: {c:?}") };
        assert_eq!(k.password.expose(), "s3cret");
        assert_eq!((k.project.as_str(), k.user_domain.as_str()), ("demo", "Default"));
        assert_eq!(c.username.as_deref(), Some("u"));
        assert!(!format!("{c:?}").contains("s3cret"), "Debug shows the password");
    }

    #[test]
    fn token_and_noauth() {
        assert_eq!(parse(&wrap("<token>tok</token>")).unwrap().auth, Auth::Token(Secret::new("tok")));
        let c = parse(&wrap("<strategy>NoAuth</strategy><password>x</password>")).unwrap();
        assert_eq!(c.auth, Auth::NoAuth);
        let bare = parse("<openstack_credentials><strategy>noauth</strategy></openstack_credentials>").unwrap();
        assert_eq!(bare.auth, Auth::NoAuth);
    }

    #[test]
    fn errors_are_one_line_and_never_quote_the_password() {
        let secret = "pa&ss<word";
        let cases = [
            format!("<provider_credentials><openstack_credentials><password>{secret}"),
            wrap(&format!("<password>{secret}</password>")).replace("</openstack_credentials>", ""),
            wrap(&format!("<password>x{}</password>", "&bogus;")),
            wrap("<password>hunter2</password><username>u</username>"),
            wrap("<pasword>hunter2</pasword>"),
            wrap("<strategy>magic</strategy>"),
            wrap(""),
            "<ec2_credentials/>".to_string(),
        ];
        for xml in cases {
            let e = parse(&xml).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(!e.contains("pa&ss") && !e.contains("hunter2") && !e.contains("bogus"), "{e}");
            assert!(e.starts_with("OpenStack credentials: "), "{e}");
        }
        let e = parse(&wrap("<password>hunter2</password><username>u</username>")).unwrap_err().to_string();
        assert!(e.contains("<auth_url>") && e.contains("<tenant>"), "{e}");
    }
}
