//! The packet-level harness of the real servers' decapsulation program: `lb_decap` loaded as
//! `lb-ctl decap attach` loads it (without attaching), its settings written by the same code,
//! frames run with BPF_PROG_TEST_RUN, and the reason each frame was counted under read back.

use aya::Ebpf;
use lb_common::decap::{DecapReason, names};
use lb_ctl::maps::{
    decap::{DecapMaps, Settings},
    loader,
};

use crate::packet::{Output, require_root, test_run};

pub struct DecapHarness {
    ebpf: Ebpf,
    maps: DecapMaps,
}

impl DecapHarness {
    /// Loads the program (the verifier runs) and writes `settings`.
    pub fn new(settings: &Settings) -> DecapHarness {
        require_root();
        let mut ebpf = loader::load_decap(None).expect("loading the decapsulation program");
        let maps = DecapMaps::from_ebpf(&mut ebpf).expect("opening its maps");
        let mut h = DecapHarness { ebpf, maps };
        h.set(settings);
        h
    }

    pub fn set(&mut self, settings: &Settings) {
        self.maps.write(settings).expect("writing the settings");
        assert_eq!(
            &self.maps.settings().expect("reading the settings"),
            settings
        );
    }

    /// The instructions the verifier processed when it loaded the program.
    pub fn verified_instructions(&mut self) -> u32 {
        loader::program(&mut self.ebpf, names::PROGRAM)
            .expect("the program")
            .info()
            .expect("the program's info")
            .verified_instruction_count()
            .expect("this kernel reports the verifier's count")
    }

    /// Runs `frame` once; returns what came out and the one reason it was counted under.
    pub fn run(&mut self, frame: &[u8]) -> (Output, DecapReason) {
        let before = self.maps.counts().expect("reading DECAP_STATS");
        let prog = loader::program(&mut self.ebpf, names::PROGRAM).expect("the program");
        let out = test_run(prog, frame).expect("running a frame through lb_decap");
        let after = self.maps.counts().expect("reading DECAP_STATS");
        let changed: Vec<(DecapReason, u64)> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| a.1 != b.1)
            .map(|(b, a)| (a.0, a.1 - b.1))
            .collect();
        match changed[..] {
            [(reason, 1)] => (out, reason),
            _ => panic!("one frame must count once under one reason, got {changed:?}"),
        }
    }
}
