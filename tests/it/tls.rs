//! TLS to PostgreSQL (issue 14): the local server has `ssl = on` with a
//! self-signed certificate for `localhost`. `require` connects (encrypted,
//! unverified, as libpq), `prefer` (the default) uses TLS when offered,
//! `disable` does not, `verify-full` refuses the certificate for
//! `127.0.0.1` naming the host, and accepts it for `localhost` against
//! the certificate itself as `sslrootcert`.

use crate::services::{self, pg};

/// `DATABASE_URL` with `params` added to its query.
fn with(params: &str) -> String {
    let url = services::database_url();
    let join = if url.contains('?') { '&' } else { '?' };
    format!("{url}{join}{params}")
}

async fn uses_tls(client: &tokio_postgres::Client) -> bool {
    client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_decides_whether_connections_are_encrypted() {
    for (params, encrypted) in
        [("sslmode=require", true), ("sslmode=prefer", true), ("application_name=x", true), ("sslmode=disable", false)]
    {
        let client = host::sink::connect::connect(&with(params)).await.unwrap_or_else(|e| panic!("{params}: {e}"));
        assert_eq!(uses_tls(&client).await, encrypted, "{params}");
        // The sink's pool connects the same way.
        let pool = host::sink::pool(&with(params), 1).unwrap();
        assert_eq!(uses_tls(&pool.get().await.unwrap()).await, encrypted, "{params}: pool");
    }
}

fn host_command(url: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(crate::objects::host_binary());
    cmd.args(["migrate"]).arg(crate::common::workspace().join("pipelines/logins.toml")).env("DATABASE_URL", url);
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_refuses_a_certificate_that_does_not_name_the_host() {
    services::migrated().await;
    let url = with("sslmode=verify-full");
    let out = host_command(&url).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let at = format!("cannot connect to the database at {} (sslmode=verify-full)", services::database_address());
    assert!(stderr.contains(&at), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    // `disable` and `require` still work.
    for params in ["sslmode=disable", "sslmode=require"] {
        let out = host_command(&with(params)).output().unwrap();
        assert!(out.status.success(), "{params}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_accepts_the_certificate_for_its_own_name_against_sslrootcert() {
    let cert: String = pg().await.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    assert!(std::fs::metadata(&cert).is_ok(), "the server's certificate {cert} is readable here");
    let url = services::database_url().replace("127.0.0.1", "localhost");
    let join = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{join}sslmode=verify-full&sslrootcert={cert}");
    let client = host::sink::connect::connect(&full).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(uses_tls(&client).await);
    let empty = std::env::temp_dir().join(format!("{}.pem", services::unique("no-cert")));
    std::fs::write(&empty, "").unwrap();
    let err = host::sink::connect::connect(&format!("{url}{join}sslmode=verify-ca&sslrootcert={}", empty.display()))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no certificate in it"), "{err}");
    // `verify-ca` and `require` against the certificate itself: the chain is
    // checked, the name (127.0.0.1 here) is not.
    let local = services::database_url();
    let join = if local.contains('?') { '&' } else { '?' };
    for mode in ["verify-ca", "require"] {
        let url = format!("{local}{join}sslmode={mode}&sslrootcert={cert}");
        let client = host::sink::connect::connect(&url).await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(uses_tls(&client).await, "{mode}");
    }
    // Without a root of its own, `verify-ca` is refused.
    let err = host::sink::connect::connect(&format!("{local}{join}sslmode=verify-ca")).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("needs sslrootcert"), "{err}");
}

/// `host run --once` with `sslmode=require` loads its messages.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_over_required_tls_loads() {
    let (name, schema) = (services::unique("tls_run"), services::unique("s"));
    crate::run::schema_with_user_logins(&schema).await;
    let sqs = services::sqs().await;
    let url = services::queue(&sqs, &name).await;
    services::send(&sqs, &url, &crate::faults::good_bodies(5)).await;
    let file = crate::faults::pipeline_file(&name, &schema, "wait_time_s = 1");
    let mut host = crate::faults::Host::run(&file, true, &with("sslmode=require"), services::endpoint());
    let (status, out) = host.wait(std::time::Duration::from_secs(120)).await.expect("ends");
    assert!(status.success(), "{out}\n{}", host.log());
    let rows = crate::run::count(&format!("SELECT count(*) FROM {schema}.user_logins")).await;
    assert_eq!(rows, 5, "{out}");
}

/// What the URL does not say comes from where libpq looks (issue 24):
/// `PGSSLMODE`, `PGSSLROOTCERT`, and `~/.postgresql/root.crt`, through the
/// real `host migrate`. The URL's own settings win.
#[tokio::test(flavor = "multi_thread")]
async fn the_environment_says_what_the_url_does_not_as_libpq_does() {
    services::migrated().await;
    let cert: String = pg().await.query_one("SHOW ssl_cert_file", &[]).await.unwrap().get(0);
    let url = services::database_url();
    let home = std::env::temp_dir().join(services::unique("home"));
    std::fs::create_dir_all(home.join(".postgresql")).unwrap();
    let run = |envs: &[(&str, &str)], url: &str| {
        let mut cmd = host_command(url);
        cmd.env_remove("PGSSLMODE").env_remove("PGSSLROOTCERT").env("HOME", &home).envs(envs.iter().copied());
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // PGSSLMODE: the certificate names `localhost`, not 127.0.0.1.
    let (code, stderr) = run(&[("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &cert)], &url);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("(sslmode=verify-full)") && stderr.contains("invalid peer certificate"), "{stderr}");
    // ... and the URL's own sslmode wins over it.
    let (code, stderr) = run(&[("PGSSLMODE", "verify-full")], &with("sslmode=disable"));
    assert_eq!(code, Some(0), "{stderr}");
    // PGSSLROOTCERT: `verify-ca` checks the chain only.
    let (code, stderr) = run(&[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", &cert)], &url);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = run(&[("PGSSLMODE", "bogus")], &url);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("PGSSLMODE: sslmode `bogus` is not one of"), "{stderr}");
    // ~/.postgresql/root.crt: with it, `require` checks the chain, as in
    // libpq; a root that did not sign the server's certificate is refused.
    let root = home.join(".postgresql/root.crt");
    std::fs::write(&root, other_root()).unwrap();
    let (code, stderr) = run(&[("PGSSLMODE", "require")], &url);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("(sslmode=require)") && stderr.contains("invalid peer certificate"), "{stderr}");
    std::fs::copy(&cert, &root).unwrap();
    let (code, stderr) = run(&[("PGSSLMODE", "require")], &url);
    assert_eq!(code, Some(0), "{stderr}");
    std::fs::remove_dir_all(&home).unwrap();
}

/// A self-signed certificate that did not sign the server's (made with
/// `openssl req -x509 -newkey ec`; its key was thrown away).
fn other_root() -> &'static str {
    "-----BEGIN CERTIFICATE-----\n\
     MIIBkzCCATmgAwIBAgIUVXE+2HhsdkRWynjj73YnW5b3npcwCgYIKoZIzj0EAwIw\n\
     HjEcMBoGA1UEAwwTbm90IHRoZSBzZXJ2ZXIncyBDQTAgFw0yNjEyMDUwNDE1MTda\n\
     GA8yMTI2MTExMTA0MTUxN1owHjEcMBoGA1UEAwwTbm90IHRoZSBzZXJ2ZXIncyBD\n\
     QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDRM9NHxI3+WLAdZqjb+kXk5vOXw\n\
     4cYeuRYHSxja5hHiUsxqIuWKb3j/IfaA9piv9krpX1PRitD0ja8jG2KKow6jUzBR\n\
     MB0GA1UdDgQWBBTcPyZasSXmqFM4Is5GqRkGvZPQVDAfBgNVHSMEGDAWgBTcPyZa\n\
     sSXmqFM4Is5GqRkGvZPQVDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA\n\
     MEUCIHJiKK+wCfEouIzyAu2gYNP6tRgSTkcHvAYIW+jRziyfAiEAtSG6iW6bPw4X\n\
     T3VQnawYGK4G13EbNvip5QOelN39PGE=\n\
     -----END CERTIFICATE-----\n"
}
