//! ICICLE: the installed package list in the original's XML,
//! `<icicle><description/><packages><package name="name-version-release.arch"><extra>…</extra></package>…</packages></icicle>`
//! (Oz's `oz/icicle.rng`), made from the `rpm -qa` lines the `%post` printed.

use crate::error::RedHatError;
use imagefactory_plugin_api::xml::escape;

/// The ICICLE of `packages` (`rpm -qa` lines) with the optional per-package lines of the
/// template's `<icicle><extra_command>` (same order, same count, as Oz requires).
/// Packages are sorted by name so the same image always gives the same ICICLE.
pub fn xml(packages: &[String], extra: Option<&[String]>, description: Option<&str>) -> Result<String, RedHatError> {
    if let Some(e) = extra {
        if e.len() != packages.len() {
            return Err(RedHatError::IcicleMismatch { lines: e.len(), packages: packages.len() });
        }
    }
    let mut rows: Vec<(&str, Option<&str>)> =
        packages.iter().enumerate().map(|(i, p)| (p.as_str(), extra.map(|e| e[i].as_str()))).collect();
    rows.sort();
    rows.dedup();
    let mut out = String::from("<icicle>");
    if let Some(d) = description {
        out.push_str(&format!("<description>{}</description>", escape(d)));
    }
    out.push_str("<packages>");
    for (name, extra) in rows {
        match extra {
            Some(x) => {
                out.push_str(&format!("<package name=\"{}\"><extra>{}</extra></package>", escape(name), escape(x)))
            }
            None => out.push_str(&format!("<package name=\"{}\"/>", escape(name))),
        }
    }
    out.push_str("</packages></icicle>");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sorted_with_extras() {
        let x = xml(&v(&["zsh-5.9-1.x86_64", "bash-5.2-1.x86_64"]), Some(&v(&["z<", "b&"])), Some("d \"q\"")).unwrap();
        assert_eq!(
            x,
            "<icicle><description>d &quot;q&quot;</description><packages>\
<package name=\"bash-5.2-1.x86_64\"><extra>b&amp;</extra></package>\
<package name=\"zsh-5.9-1.x86_64\"><extra>z&lt;</extra></package></packages></icicle>"
        );
        assert_eq!(xml(&[], None, None).unwrap(), "<icicle><packages></packages></icicle>");
        let e = xml(&v(&["a"]), Some(&v(&["1", "2"])), None).unwrap_err().to_string();
        assert_eq!(e, "the ICICLE extra command printed 2 lines for 1 packages");
    }
}
