//! The flow table's slot function and key compare, which the XDP program and the agent share.

use helo_common::{
    maps::{FlowKey, FLOW_CAPACITY},
    HashKey,
};
use proptest::prelude::*;

const KEY: HashKey = HashKey { k0: 0x0706_0504_0302_0100, k1: 0x0f0e_0d0c_0b0a_0908 };

fn v4_flow(client: [u8; 4], sport: u16) -> FlowKey {
    let mapped = |a: [u8; 4]| {
        let mut m = [0u8; 16];
        m[10] = 0xff;
        m[11] = 0xff;
        m[12..].copy_from_slice(&a);
        m
    };
    FlowKey::new(mapped(client), mapped([198, 18, 0, 2]), sport.to_be(), 25u16.to_be())
}

proptest! {
    #[test]
    fn same_as_is_equality(a in any::<[u8; 16]>(), b in any::<[u8; 16]>(), p in any::<u16>(), q in any::<u16>(), flip in 0usize..37) {
        let x = FlowKey::new(a, b, p, q);
        prop_assert!(x.same_as(&FlowKey::new(a, b, p, q)));
        prop_assert_eq!((x.saddr(), x.daddr()), (a, b));
        // Any one byte changed makes it another flow.
        let (mut a2, mut b2, mut p2, mut q2) = (a, b, p, q);
        match flip {
            0..=15 => a2[flip] ^= 1,
            16..=31 => b2[flip - 16] ^= 1,
            32 => p2 ^= 1,
            33 => p2 ^= 0x100,
            34 => q2 ^= 1,
            _ => q2 ^= 0x100,
        }
        let y = FlowKey::new(a2, b2, p2, q2);
        prop_assert_eq!(x.same_as(&y), x == y);
        prop_assert!(!x.same_as(&y));
    }
}

/// One client's connections (ports walking up, as a bot's do) and 65,536 clients' spread over
/// the table like random picks would: no slot holds more than a handful, and the key moves them.
#[test]
fn slots_spread_flows_and_depend_on_the_key() {
    let mut load = vec![0u32; FLOW_CAPACITY as usize];
    let mut moved = 0;
    let other = HashKey { k0: 1, k1: 2 };
    for i in 0..65_536u32 {
        for flow in [v4_flow([198, 19, 0, 1], 1024 + i as u16 % 60_000), v4_flow((0xc612_0000u32 + i).to_be_bytes(), 40_000)] {
            let slot = flow.slot(&KEY);
            assert!(slot < FLOW_CAPACITY);
            load[slot as usize] += 1;
            moved += (flow.slot(&other) != slot) as u32;
        }
    }
    let max = *load.iter().max().unwrap();
    // 131,072 flows in 262,144 slots: a uniform spread puts at most about 8 in one slot.
    assert!(max <= 10, "a slot holds {max} flows");
    assert!(moved > 130_000, "only {moved} of 131,072 flows changed slot with the key");
}
