//! RTP reception statistics (RFC 3550 §6.4.1 and Appendix A.1/A.3/A.8): sequence tracking, loss and
//! interarrival jitter. Time is told: the caller passes each packet's arrival time in RTP clock units.

use crate::rtcp::ReportBlock;

const MAX_DROPOUT: u16 = 3000;
const MAX_MISORDER: u16 = 100;

/// Per-source reception statistics; update with [`ReceiveStats::on_packet`] for every RTP packet.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    initialized: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Relative transit time of the last packet (arrival − timestamp, modulo 2^32: both clocks wrap).
    transit: u32,
    have_transit: bool,
    /// Jitter estimate ×16, as in RFC 3550 A.8.
    jitter_q4: u64,
    /// Packets seen with a sequence number far from the expected one (source restart or garbage).
    pub bad_sequence: u64,
    /// Packets older than the highest sequence number seen (reordered or duplicated).
    pub out_of_order: u64,
}

impl ReceiveStats {
    /// Accounts one packet with sequence `seq` and RTP `timestamp`, arrived at `arrival` (RTP clock units).
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, arrival: u32) {
        if !self.initialized {
            self.initialized = true;
            self.max_seq = seq;
            self.base_seq = u32::from(seq);
            self.cycles = 0;
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta == 0 {
                self.out_of_order += 1;
            } else if delta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_seq = seq;
            } else if delta <= u16::MAX - MAX_MISORDER {
                // A large jump: treat as a restart of the sequence space.
                self.bad_sequence += 1;
                self.max_seq = seq;
                self.base_seq = u32::from(seq);
                self.cycles = 0;
                self.received = 0;
                self.expected_prior = 0;
                self.received_prior = 0;
            } else {
                self.out_of_order += 1;
            }
        }
        self.received += 1;
        // Interarrival jitter (RFC 3550 A.8). Both clocks are 32-bit and wrap: transit is taken modulo 2^32
        // and D as the signed 32-bit difference, so a wrap of the RTP timestamp (every 24.9 h at 48 kHz) or
        // of the arrival clock is not mistaken for a 2^32-unit delay jump.
        let transit = arrival.wrapping_sub(timestamp);
        if self.have_transit {
            let d = u64::from((transit.wrapping_sub(self.transit) as i32).unsigned_abs());
            // J += (|D| - J) / 16, kept ×16.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.transit = transit;
        self.have_transit = true;
    }

    /// Packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Extended highest sequence number.
    pub fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected from the first to the highest sequence number.
    pub fn expected(&self) -> u64 {
        if !self.initialized {
            return 0;
        }
        u64::from(self.extended_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Cumulative packets lost (negative with duplicates).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in RTP clock units.
    pub fn jitter(&self) -> u32 {
        (self.jitter_q4 >> 4) as u32
    }

    /// A report block for `ssrc`; updates the "since last report" counters used for the fraction lost.
    pub fn report_block(
        &mut self,
        ssrc: u32,
        last_sr: u32,
        delay_since_last_sr: u32,
    ) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-(1 << 23), (1 << 23) - 1) as i32,
            highest_sequence: self.extended_max(),
            jitter: self.jitter(),
            last_sr,
            delay_since_last_sr,
        }
    }
}
