-- prm CHECK lists as constants (0.3.0).  PostgreSQL keeps a CHECK
-- constraint as the text of its expression tree and reads that text back
-- (stringToNode, then const-folding) in every INSERT and UPDATE statement of
-- the table.  A list written status IN ('a', 'b', ...) is stored as an ARRAY
-- constructor of one constant per value, folded again each time: 2,244
-- characters for the outbound message's eleven statuses (since
-- 88_outbox_rules.sql, one C call checks those).  Written as one
-- array constant, status = ANY ('{a,b,...}'::text[]), it is 846, and the
-- same rule.  Each hot write (an enqueue, a YES, a cancellation) touches a
-- few such tables, so the lists of 0.1.0 and 0.2.0 are rewritten here, each
-- under its own name with the same values; new tables write theirs in this
-- form (test/pgtap/check_lists.sql checks that none is left).  Re-adding a
-- constraint checks the table's rows once, during the update.
DO $$
DECLARE
    c       record;
    def     text;
    inner_  text;
    folded  text;
BEGIN
    FOR c IN
        SELECT r.relname AS tab, k.conname, pg_catalog.pg_get_constraintdef(k.oid) AS def
          FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class r ON r.oid = k.conrelid
         WHERE k.connamespace = 'prm'::regnamespace AND k.contype = 'c'
           AND k.conbin LIKE '%{ARRAYEXPR %'
         ORDER BY 1, 2
    LOOP
        def := c.def;
        -- one ARRAY[...] per list in these definitions; a form not matched
        -- below is left as it was (and the test names it)
        inner_ := substring(def FROM 'ARRAY\[([^]]*)\]');
        IF inner_ ~ '^''[a-z0-9_-]+''::text(, ''[a-z0-9_-]+''::text)*$' THEN
            folded := '''{' || replace(replace(inner_, '''::text', ''), '''', '') || '}''::text[]';
        ELSIF inner_ ~ '^[0-9]+(, [0-9]+)*$' THEN
            folded := '''{' || inner_ || '}''::integer[]';
        ELSE
            CONTINUE;
        END IF;
        folded := replace(folded, ', ', ',');
        def := replace(def, 'ARRAY[' || inner_ || ']', folded);
        -- named in schema prm: a temporary table of that name would come first
        EXECUTE format('ALTER TABLE prm.%I DROP CONSTRAINT %I, ADD CONSTRAINT %I %s',
                       c.tab, c.conname, c.conname, def);
    END LOOP;
END
$$;
