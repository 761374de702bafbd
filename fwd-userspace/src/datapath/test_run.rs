//! BPF_PROG_TEST_RUN of the real programs, for the fixtures and the program-cost bench.

use std::time::Duration;

use aya::programs::{ProgramError, SchedClassifier, TestRunOptions, Xdp};

use super::{Datapath, DatapathError, program};

pub(super) fn test_run<P>(
    program: &P,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, Duration), DatapathError>
where
    P: for<'a> aya::programs::TestRun<
            Opts<'a> = TestRunOptions<'a>,
            Result = aya::programs::TestRunResult,
        >,
{
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat.max(1);
    let result = program
        .test_run(opts)
        .map_err(|source| DatapathError::Program { name, source })?;
    Ok((result.return_value, result.duration))
}

impl Datapath {
    /// Runs the outbound XDP program on one Ethernet frame through BPF_PROG_TEST_RUN,
    /// `repeat` times; returns the XDP action and the kernel's average time per run.
    /// Counters, flows and fragments record these runs like real packets.
    pub fn test_run_xdp(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(program::XDP_OUT)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load");
        test_run(program, program::XDP_OUT, frame, repeat)
    }

    /// Runs a TC program (`program::TC_OUT` or `program::TC_IN`) on one Ethernet frame;
    /// returns the TC action (-1 pass to the next program, 2 drop) and the time per run.
    pub fn test_run_tc(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(i32, Duration), DatapathError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::Program {
                name,
                source: ProgramError::NotLoaded,
            })?;
        let (action, duration) = test_run(program, name, frame, repeat)?;
        Ok((action as i32, duration))
    }

    /// Bench only: runs `program::XDP_PARSE` (`xdp`) or `program::TC_PARSE` on one frame
    /// like `test_run_xdp`: the parse of `fwd_xdp` or `fwd_tc_out`, then pass (no policy
    /// lookup, flow or counter). Loaded on first use; `load_with` leaves them out, so a
    /// daemon never loads, attaches or pins them.
    pub fn test_run_parse_only(
        &mut self,
        xdp: bool,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let name = if xdp {
            program::XDP_PARSE
        } else {
            program::TC_PARSE
        };
        let prog_err = move |source| DatapathError::Program { name, source };
        if xdp {
            let program: &mut Xdp = self.program_mut(name)?.try_into().map_err(prog_err)?;
            if program.fd().is_err() {
                program.load().map_err(prog_err)?;
            }
            test_run(&*program, name, frame, repeat)
        } else {
            let program: &mut SchedClassifier =
                self.program_mut(name)?.try_into().map_err(prog_err)?;
            if program.fd().is_err() {
                program.load().map_err(prog_err)?;
            }
            test_run(&*program, name, frame, repeat)
        }
    }
}
