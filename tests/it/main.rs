//! The one integration-test binary: the real engine running the real built
//! components (built by `build.rs`), pipeline files, and the `host` CLI.

mod admin;
mod cli;
mod common;
mod dead_letter_tools;
mod dead_letters;
mod deploy;
mod errors;
mod exits;
mod faults;
mod files;
mod golden;
mod group_commit;
mod hardening;
mod health;
mod histories;
mod keys;
mod library;
mod lineage;
mod objects;
mod outages;
mod pipeline_files;
mod polyglot;
mod proxy;
mod replay;
mod run;
mod sandbox;
mod scaffold;
mod services;
mod sftp;
mod shadow;
mod sshd;
mod swap;
mod tables;
mod tls;
