//! ICICLE: the image's package manifest, in the XML the original Image Factory stored
//! (`<icicle><description/><packages><package name="name-version.arch"/>...`), so tools
//! that read the original's ICICLEs read these.

use imagefactory_plugin_api::xml::escape;

/// The `dpkg-query` format whose output [`from_dpkg_query`] reads.
pub const DPKG_QUERY_FORMAT: &str = "${Package} ${Version} ${Architecture}\\n";

/// The ICICLE of an image from `dpkg-query -W -f "${Package} ${Version} ${Architecture}\n"`
/// output. Packages are sorted by name so the same image always gives the same ICICLE.
pub fn from_dpkg_query(output: &str, description: Option<&str>, extra: Option<&str>) -> String {
    let mut names: Vec<String> = output
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(p), Some(v), Some(a)) => Some(format!("{p}-{v}.{a}")),
                _ => None,
            }
        })
        .collect();
    names.sort();
    names.dedup();
    let mut xml = String::from("<icicle>");
    if let Some(d) = description {
        xml.push_str(&format!("<description>{}</description>", escape(d)));
    }
    xml.push_str("<packages>");
    for n in &names {
        xml.push_str(&format!("<package name=\"{}\"/>", escape(n)));
    }
    xml.push_str("</packages>");
    if let Some(e) = extra {
        xml.push_str(&format!("<extra>{}</extra>", escape(e.trim())));
    }
    xml.push_str("</icicle>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_sorted_and_escaped() {
        let out = "zstd 1.5.4+dfsg2-5 amd64\nlinux-image-amd64 6.1.99-1 amd64\n\nbroken-line\nbase-files 12.4+deb12u6 amd64\n";
        let xml = from_dpkg_query(out, Some("a <test> & more"), Some("extra \"out\"\n"));
        assert_eq!(
            xml,
            "<icicle><description>a &lt;test&gt; &amp; more</description><packages>\
<package name=\"base-files-12.4+deb12u6.amd64\"/><package name=\"linux-image-amd64-6.1.99-1.amd64\"/>\
<package name=\"zstd-1.5.4+dfsg2-5.amd64\"/></packages><extra>extra &quot;out&quot;</extra></icicle>"
        );
    }

    #[test]
    fn minimal_icicle() {
        assert_eq!(from_dpkg_query("", None, None), "<icicle><packages></packages></icicle>");
    }
}
