//! Which segments go out, in which order: ascending, descending or shuffled within a
//! window, with seeded loss, duplication and reordering (there is no netem here; a seed
//! keeps runs reproducible). Pure and deterministic.

/// Segment order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// 0, 1, 2, ...
    Ascending,
    /// Last segment first.
    Descending,
    /// Shuffled within windows of `--shuffle-window` segments.
    Shuffled,
}

/// Seeded impairments, as probabilities in 0..=1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairments {
    /// A segment is not sent.
    pub loss: f64,
    /// A segment is sent twice.
    pub duplicate: f64,
    /// A segment swaps places with the next one.
    pub reorder: f64,
}

/// A small seeded generator (SplitMix64): reproducible, no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // The remainder is below n, so it fits.
        usize::try_from(self.next_u64() % n.max(1) as u64).unwrap_or(0)
    }
}

/// The send order of segments `0..segments`, impairments applied. A grant that asks for
/// back-to-front runs (`descending_run`, whole-frame landing) gets them, whatever `order`.
pub fn schedule(
    segments: usize,
    order: Order,
    shuffle_window: usize,
    descending_run: Option<usize>,
    imp: Impairments,
    rng: &mut Rng,
) -> Vec<usize> {
    let mut s: Vec<usize> = (0..segments).collect();
    if let Some(run) = descending_run {
        for chunk in s.chunks_mut(run.max(1)) {
            chunk.reverse();
        }
        return impair(s, imp, rng);
    }
    match order {
        Order::Ascending => {}
        Order::Descending => s.reverse(),
        Order::Shuffled => {
            for chunk in s.chunks_mut(shuffle_window.max(1)) {
                for i in (1..chunk.len()).rev() {
                    let j = rng.below(i + 1);
                    chunk.swap(i, j);
                }
            }
        }
    }
    impair(s, imp, rng)
}

/// Loss, duplication and reordering applied to the order `s`.
fn impair(s: Vec<usize>, imp: Impairments, rng: &mut Rng) -> Vec<usize> {
    let mut out = Vec::with_capacity(s.len());
    for seg in s {
        if rng.chance(imp.loss) {
            continue;
        }
        out.push(seg);
        if rng.chance(imp.duplicate) {
            out.push(seg);
        }
    }
    for i in 0..out.len().saturating_sub(1) {
        if rng.chance(imp.reorder) {
            out.swap(i, i + 1);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations() {
        let mut rng = Rng::new(1);
        let none = Impairments::default();
        assert_eq!(
            schedule(5, Order::Ascending, 4, None, none, &mut rng),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            schedule(5, Order::Descending, 4, None, none, &mut rng),
            [4, 3, 2, 1, 0]
        );
        let mut s = schedule(100, Order::Shuffled, 8, None, none, &mut rng);
        assert_ne!(s, (0..100).collect::<Vec<_>>(), "shuffled");
        // Each window of 8 stays a permutation of itself.
        for (w, chunk) in s.chunks(8).enumerate() {
            let mut c = chunk.to_vec();
            c.sort_unstable();
            assert_eq!(c, (w * 8..(w * 8 + 8).min(100)).collect::<Vec<_>>());
        }
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn impairments_are_seeded_and_roughly_as_asked() {
        let imp = Impairments {
            loss: 0.1,
            duplicate: 0.05,
            reorder: 0.0,
        };
        let a = schedule(10_000, Order::Ascending, 1, None, imp, &mut Rng::new(7));
        let b = schedule(10_000, Order::Ascending, 1, None, imp, &mut Rng::new(7));
        assert_eq!(a, b, "same seed, same schedule");
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        let lost = 10_000 - distinct.len();
        let dups = a.len() - distinct.len();
        assert!((800..1200).contains(&lost), "lost {lost}");
        assert!((300..700).contains(&dups), "duplicated {dups}");
        assert_ne!(
            a,
            schedule(10_000, Order::Ascending, 1, None, imp, &mut Rng::new(8))
        );
    }

    #[test]
    fn a_grant_asking_for_back_to_front_runs_gets_them() {
        let none = Impairments::default();
        let mut rng = Rng::new(1);
        assert_eq!(
            schedule(7, Order::Ascending, 4, Some(3), none, &mut rng),
            vec![2, 1, 0, 5, 4, 3, 6]
        );
        assert_eq!(
            schedule(4, Order::Shuffled, 4, Some(100), none, &mut rng),
            vec![3, 2, 1, 0]
        );
    }
}
