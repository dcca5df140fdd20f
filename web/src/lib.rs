//! The web dashboard's static files (HTML, JavaScript, CSS), compiled into the binaries that
//! serve them: the master and the HistoryServer.

/// One static file of the dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file, by its path relative to the dashboard's root (`index.html`, ...). The page
/// refers to the others by relative URLs, so it also works under a path prefix (YARN's web
/// proxy) and loads nothing from other hosts.
const ASSETS: &[(&str, Asset)] = &[
    (
        "index.html",
        Asset {
            content_type: HTML,
            body: include_bytes!("../assets/index.html"),
        },
    ),
    (
        "style.css",
        Asset {
            content_type: CSS,
            body: include_bytes!("../assets/style.css"),
        },
    ),
    (
        "app.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/app.js"),
        },
    ),
    (
        "job.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/job.js"),
        },
    ),
    (
        "graph.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/graph.js"),
        },
    ),
    (
        "checkpoints.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/checkpoints.js"),
        },
    ),
    (
        "util.js",
        Asset {
            content_type: JS,
            body: include_bytes!("../assets/util.js"),
        },
    ),
];

/// The file at `path` (leading `/` ignored; the root is `index.html`), or `None`. Only the
/// compiled-in files exist, so no request path can reach the file system.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_index_page_and_unknown_paths_are_none() {
        let root = asset("/").expect("the index page");
        assert_eq!(root.content_type, "text/html; charset=utf-8");
        assert!(std::str::from_utf8(root.body).is_ok_and(|s| s.contains("<html")));
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("/nope.js").is_none());
    }

    /// Every module the page imports is served, and nothing refers to another host.
    #[test]
    fn every_import_is_served_and_nothing_is_remote() {
        for (path, a) in ASSETS {
            let text = std::str::from_utf8(a.body).expect("UTF-8 assets");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} refers to another host"
            );
            for import in text.split("from './").skip(1) {
                let name = import.split('\'').next().unwrap_or_default();
                assert!(
                    asset(name).is_some(),
                    "{path} imports {name}, which is not served"
                );
            }
        }
        assert_eq!(asset("/app.js").map(|a| a.content_type), Some(JS));
        assert_eq!(asset("style.css").map(|a| a.content_type), Some(CSS));
    }
}
