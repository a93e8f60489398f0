/**
 * Time as leases need it, injectable so tests can stop a producer at any
 * point of its lease. Wall time stamps lease expiries on the lifecycle
 * (compared across replicas); monotonic time measures how long this process
 * has held its lease (immune to wall-clock steps).
 */
export interface Clock {
  wallMs(): number;
  monoMs(): number;
}

export const systemClock: Clock = {
  wallMs: () => Date.now(),
  monoMs: () => performance.now(),
};
