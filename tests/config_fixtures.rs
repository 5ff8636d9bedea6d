//! Every fixture under tests/fixtures/config: the valid ones (and the
//! shipped config.ron) load; each invalid one fails with exactly the
//! messages its `// expect:` lines give, line and column included.

use std::path::{Path, PathBuf};

use ward::config::{self, Config};

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ron"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn the_shipped_config_is_valid_and_is_the_embedded_default() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.ron");
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert_eq!(text, config::DEFAULT_CONFIG);
    let config = Config::load(&shipped).expect("shipped config.ron is valid");
    assert_eq!(config.admin.socket, config::default_admin_socket());
    Config::default_config().expect("embedded default is valid");
}

#[test]
fn valid_fixtures_load() {
    for path in fixtures("valid") {
        let text = std::fs::read_to_string(&path).unwrap();
        if let Err(errors) = config::parse_at(&text, &name(&path), path.parent().unwrap()) {
            panic!("{} should be valid:\n{errors}", path.display());
        }
    }
}

#[test]
fn the_full_fixture_sets_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid/full.ron");
    let config = Config::load(&path).unwrap();
    assert_eq!(
        config.admin.socket,
        Path::new("/tmp/ward-fixture/admin.sock")
    );
    assert_eq!(config.admin.group.as_ref().map(|g| g.gid), Some(0));
    let run_as = config.run_as.as_ref().expect("user set");
    assert_eq!(
        (
            run_as.user.as_str(),
            run_as.uid,
            run_as.group.as_str(),
            run_as.gid
        ),
        ("nobody", 65534, "nogroup", 65534)
    );
    assert_eq!(config.admin.max_clients, 4);
    assert_eq!(config.log.level, "ward=debug,info");
    assert_eq!(config.log.format, config::LogFormat::Json);
    assert_eq!(config.log.throttle_window.as_secs(), 30);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9153".parse().unwrap())
    );
    assert_eq!(config.supervision.intensity.max_restarts, 5);
    assert_eq!(config.supervision.backoff.min.as_millis(), 50);
    assert_eq!(config.supervision.backoff.reset_after.as_secs(), 120);
}

#[test]
fn invalid_fixtures_fail_with_their_expected_messages() {
    for path in fixtures("invalid") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("// expect: "))
            .map(str::to_string)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no expect lines",
            path.display()
        );
        let errors = match config::parse_at(&text, &name(&path), path.parent().unwrap()) {
            Ok(_) => panic!("{} should be invalid", path.display()),
            Err(errors) => errors,
        };
        // Relative file paths are resolved against the fixture's directory;
        // the expectations name them as written.
        let dir = format!("{}/", path.parent().unwrap().display());
        let got: Vec<String> = errors
            .0
            .iter()
            .map(|e| e.to_string().replace(&dir, ""))
            .collect();
        assert_eq!(got, expected, "{}", path.display());
    }
}

#[test]
fn node_passwords_and_links_never_reach_an_error() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/invalid/nodes.ron");
    let text = std::fs::read_to_string(&path).unwrap();
    let errors = config::parse_at(&text, "nodes.ron", path.parent().unwrap()).unwrap_err();
    assert_eq!(errors.0.len(), 11, "{errors}");
    // "hunter2" is every password in the fixture; aHVudGVy its base64.
    for secret in ["hunter2", "aHVudGVy", "YWVzLTI1Ni1nY206aHVudGVyMg"] {
        assert!(!errors.to_string().contains(secret), "{errors}");
        assert!(!format!("{errors:?}").contains(secret));
    }
}

#[test]
fn relative_file_paths_start_at_the_config_directory() {
    use ward_actors::dns::settings::Transport;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/valid");
    let config = Config::load(&dir.join("dns_full.ron")).unwrap();
    let dns = config.dns.unwrap();
    match &dns.upstreams["dot"].transport {
        Transport::Tls(tls) => assert_eq!(tls.ca_file.as_deref(), Some(&*dir.join("ca.pem"))),
        other => panic!("dot is {other:?}"),
    }
    match &dns.upstreams["sys"].transport {
        Transport::System(file) => assert_eq!(file, &dir.join("resolv.conf")),
        other => panic!("sys is {other:?}"),
    }
}
