//! The run config parser, `RunConfig::parse` (TOML text to a validated config), and what the
//! host does with a config it accepted: the plugin parameters become JSON, the config is
//! written into the run folder as TOML (`config.toml`) and into every checkpoint as JSON, and
//! both must read back as the same config.
//!
//! `validate` resolves `http.listen` when it is a host name; a name lookup per input would
//! make the fuzzer query DNS, so a listen value that would be looked up is replaced by a
//! literal address before validation. Everything else goes through `RunConfig::parse`.
#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pareidolia_core::RunConfig;

/// Whether `to_socket_addrs` would ask the resolver about `listen`.
fn needs_lookup(listen: &str) -> bool {
    listen.parse::<SocketAddr>().is_err()
        && listen
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

fn parse(text: &str) -> Option<RunConfig> {
    let raw: RunConfig = toml::from_str(text).ok()?;
    if needs_lookup(&raw.http.listen) {
        let mut c = raw;
        c.http.listen = "127.0.0.1:9464".to_owned();
        c.base_dir = PathBuf::from("/fuzz");
        c.validate("fuzz.toml").ok()?;
        return Some(c);
    }
    RunConfig::parse(text, "fuzz.toml", PathBuf::from("/fuzz")).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(config) = parse(text) else {
        return;
    };
    let _ = (
        config.encoding.params_json(),
        config.fitness.params_json(),
        config.plugin_dirs(),
        config.initial_population(),
        config.model_keys(),
        config
            .primary_model()
            .expect("a validated config has a model"),
    );

    // The run folder's config.toml.
    let written = toml::to_string(&config).expect("an accepted config serialises to TOML");
    let reread = RunConfig::parse(&written, "config.toml", PathBuf::from("/fuzz"))
        .unwrap_or_else(|e| panic!("the written config.toml does not parse: {e}\n{written}"));
    // Compared as text, so that a NaN compares equal to itself.
    assert_eq!(
        toml::to_string(&reread).expect("serialises"),
        written,
        "config.toml reads back as the same config"
    );

    // Inside every checkpoint's metadata.
    let json = serde_json::to_vec(&config).expect("an accepted config serialises to JSON");
    let back: RunConfig = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "the config as a checkpoint stores it does not read back: {e}\n{}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        toml::to_string(&back).expect("serialises"),
        written,
        "the checkpoint's config reads back as the same config"
    );
});
