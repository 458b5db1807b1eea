//! The reliable conformance suite over in-process shared-memory pairs.

use link_shm::{ShmConfig, ShmLink};
use link_tests::LinkFactory;

struct Pair(ShmConfig);

impl LinkFactory for Pair {
    type Link = ShmLink;
    async fn pair(&self) -> (ShmLink, ShmLink) {
        ShmLink::pair(&self.0).expect("pair")
    }

    fn max_held(&self) -> usize {
        // Messages of up to 4 KiB: small slots when they fit, large ones too.
        if 4096 <= self.0.small_size {
            self.0.small_count + self.0.large_count
        } else {
            self.0.large_count
        }
    }
}

fn small() -> ShmConfig {
    ShmConfig {
        small_size: 256,
        small_count: 8,
        large_size: 64 << 10,
        large_count: 4,
        ..ShmConfig::default()
    }
}

mod default_sizes {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], Pair(ShmConfig::default()));
}

mod small_segment {
    use super::*;
    link_tests::reliable_suite!(#[tokio::test], Pair(small()));
}

mod one_slot {
    use super::*;
    link_tests::reliable_suite!(
        #[tokio::test],
        Pair(ShmConfig {
            small_count: 1,
            large_count: 1,
            ..small()
        })
    );
}
