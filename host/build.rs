//! The migrations are embedded at build time (`refinery::embed_migrations!`):
//! a new file in `migrations/` must rebuild the host.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
