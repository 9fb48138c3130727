-- prm 0.3.0, settings and time: what the scoring functions do at the edges
-- of time.  An infinite timestamp has no distance in days, so the score
-- refuses it (22008) instead of inventing a part; finite timestamps work
-- across the whole timestamp range.

\echo Use "CREATE EXTENSION prm" to load this file. \quit

COMMENT ON FUNCTION prm.priority_score(boolean, int, timestamptz, timestamptz, timestamptz) IS
    'Priority with the default weights: urgent 30 + manual boost (0-40) + wait until the current appointment (0-20, full at 60 days; a NULL current_appointment_at means no appointment and earns the full 20) + seniority (0-10, full at 90 days). NULL for a NULL in any other argument; 22023 for a boost outside 0-40; 22008 for an infinite timestamp (''infinity'' or ''-infinity''); any finite timestamps work, the two ends of the timestamp range included.';

COMMENT ON FUNCTION prm.priority_score(boolean, int, timestamptz, timestamptz, timestamptz, int, int, int, int, int) IS
    'Priority with explicit weights (an organization''s settings); current_appointment_at may be NULL. 22008 for an infinite timestamp, 22003 when the weights add up to more than an int holds.';
