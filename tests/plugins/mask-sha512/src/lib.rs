//! `mask` that always writes SHA-512 digests: what a team shipping a new
//! mask version looks like to a running host.

use mask::{AlgorithmName, Mask, Params};
use plugin_sdk::{Input, OutputBuilder, Transform};

pub struct Sha512Mask(Mask);

impl Transform for Sha512Mask {
    type Params = Params;
    const SUMMARY: &'static str = "mask, always SHA-512 (a test plugin)";

    fn new(mut params: Params) -> Result<Self, String> {
        params.algorithm = AlgorithmName::Sha512;
        Mask::new(params).map(Sha512Mask)
    }

    fn transform(&mut self, input: &Input, out: &mut OutputBuilder) {
        self.0.transform(input, out);
    }

    fn unchanged(&self, kinds: &[u8]) -> bool {
        self.0.unchanged(kinds)
    }
}

plugin_sdk::plugin!(Sha512Mask);
