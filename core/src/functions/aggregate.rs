/// An incremental aggregation, as in Flink: records are folded into an accumulator as they
/// arrive, so a window keeps one accumulator instead of all its records.
///
/// ```
/// use sluice_core::AggregateFunction;
/// #[derive(Clone)]
/// struct Average;
/// impl AggregateFunction for Average {
///     type In = u64;
///     type Acc = (u64, u64);
///     type Out = f64;
///     fn create_accumulator(&self) -> (u64, u64) { (0, 0) }
///     fn add(&self, acc: &mut (u64, u64), v: u64) { acc.0 += v; acc.1 += 1; }
///     fn get_result(&self, acc: &(u64, u64)) -> f64 { acc.0 as f64 / acc.1 as f64 }
///     fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) { (a.0 + b.0, a.1 + b.1) }
/// }
/// let mut acc = Average.create_accumulator();
/// Average.add(&mut acc, 2);
/// Average.add(&mut acc, 4);
/// assert_eq!(Average.get_result(&acc), 3.0);
/// ```
pub trait AggregateFunction: Clone + Send + Sync + 'static {
    /// Records aggregated.
    type In: crate::Data;
    /// The running state.
    type Acc: crate::Data;
    /// The result.
    type Out: crate::Data;
    /// A fresh accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds one record in.
    fn add(&self, acc: &mut Self::Acc, value: Self::In);
    /// The result of an accumulator.
    fn get_result(&self, acc: &Self::Acc) -> Self::Out;
    /// Combines two accumulators (session windows merge this way).
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
}
