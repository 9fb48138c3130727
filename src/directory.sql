-- prm directory: locations, providers, patients, appointments and slots,
-- with the functions that write them.

CREATE TABLE prm.location (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    timezone    text,
    address     text CHECK (length(address) <= 500),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id)
);
COMMENT ON TABLE prm.location IS 'A place where a clinic sees patients.';

CREATE TABLE prm.provider (
    org_id      bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    location_id bigint,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, location_id) REFERENCES prm.location (org_id, id)
);
COMMENT ON TABLE prm.provider IS 'A practitioner (FHIR Practitioner) who holds appointments.';

CREATE TABLE prm.patient (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    given_name      text NOT NULL CHECK (length(given_name) BETWEEN 1 AND 200),
    family_name     text NOT NULL CHECK (length(family_name) BETWEEN 1 AND 200),
    phone           text CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    email           text CHECK (length(email) <= 254),
    timezone        text,
    language        text NOT NULL DEFAULT 'en',
    sms_opt_out     boolean NOT NULL DEFAULT false,
    opted_out_at    timestamptz,
    external_source text,
    external_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, external_source, external_id)
);
CREATE INDEX patient_phone_idx ON prm.patient (org_id, phone);
COMMENT ON TABLE prm.patient IS 'A patient of a clinic. phone is E.164; timezone NULL means the clinic''s; sms_opt_out is set by STOP and cleared by START.';

CREATE TABLE prm.appointment (
    org_id        bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    patient_id    bigint NOT NULL,
    provider_id   bigint NOT NULL,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    status        text NOT NULL DEFAULT 'booked'
                  CHECK (status IN ('proposed', 'pending', 'booked', 'arrived', 'fulfilled',
                                    'cancelled', 'noshow', 'entered-in-error', 'checked-in',
                                    'waitlist')),
    slot_id       bigint,         -- the slot it filled; no foreign key, so that
                                  -- slot -> appointment stays acyclic for pg_dump
    cancelled_at  timestamptz,
    cancel_reason text CHECK (length(cancel_reason) <= 500),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, patient_id) REFERENCES prm.patient (org_id, id),
    FOREIGN KEY (org_id, provider_id) REFERENCES prm.provider (org_id, id),
    CHECK (ends_at > starts_at),
    CONSTRAINT appointment_no_double_booking EXCLUDE USING gist (
        org_id WITH =, provider_id WITH =, tstzrange(starts_at, ends_at) WITH &&)
        WHERE (status IN ('proposed', 'pending', 'booked', 'arrived', 'checked-in', 'fulfilled'))
);
CREATE INDEX appointment_patient_idx ON prm.appointment (org_id, patient_id, starts_at);
COMMENT ON TABLE prm.appointment IS 'An appointment; status follows FHIR Appointment.status. A provider cannot hold two overlapping active appointments (23P01).';

CREATE TABLE prm.slot (
    org_id          bigint NOT NULL REFERENCES prm.organization (id) ON DELETE CASCADE,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    provider_id     bigint NOT NULL,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'free'
                    CHECK (status IN ('free', 'busy', 'busy-unavailable', 'busy-tentative',
                                      'entered-in-error')),
    appointment_id  bigint,
    booked_appointment_id bigint,
    created_at      timestamptz NOT NULL DEFAULT now(),
    filled_at       timestamptz,
    PRIMARY KEY (org_id, id),
    FOREIGN KEY (org_id, provider_id) REFERENCES prm.provider (org_id, id),
    FOREIGN KEY (org_id, appointment_id) REFERENCES prm.appointment (org_id, id),
    FOREIGN KEY (org_id, booked_appointment_id) REFERENCES prm.appointment (org_id, id),
    CHECK (ends_at > starts_at)
);
CREATE INDEX slot_provider_idx ON prm.slot (org_id, provider_id, starts_at) WHERE status = 'free';
COMMENT ON TABLE prm.slot IS 'Time a provider has free (FHIR Slot.status), made by cancelling an appointment. appointment_id is the cancelled appointment, booked_appointment_id the one that filled it.';

SELECT pg_catalog.pg_extension_config_dump('prm.location', '');
SELECT pg_catalog.pg_extension_config_dump('prm.location_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.provider', '');
SELECT pg_catalog.pg_extension_config_dump('prm.provider_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.patient', '');
SELECT pg_catalog.pg_extension_config_dump('prm.patient_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.appointment', '');
SELECT pg_catalog.pg_extension_config_dump('prm.appointment_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('prm.slot', '');
SELECT pg_catalog.pg_extension_config_dump('prm.slot_id_seq', '');

ALTER TABLE prm.location ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.provider ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.patient ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.appointment ENABLE ROW LEVEL SECURITY;
ALTER TABLE prm.slot ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_read ON prm.location FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.provider FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.patient FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.appointment FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));
CREATE POLICY tenant_read ON prm.slot FOR SELECT
    USING (org_id IN (SELECT a.org_id FROM prm.org_access a
                       WHERE a.level IN ('admin', 'staff', 'readonly')
                         AND pg_catalog.pg_has_role(a.role_id, 'USAGE')));

CREATE FUNCTION prm.create_organization(name text, timezone text DEFAULT 'UTC',
                                        sms_number text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_create_organization';
COMMENT ON FUNCTION prm.create_organization(text, text, text) IS
    'Create a clinic with an IANA time zone and an SMS number (normalised to E.164); returns its id. Needs a superuser or the extension owner.';

CREATE FUNCTION prm.add_location(org_id bigint, name text, timezone text DEFAULT NULL,
                                 address text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_add_location';
COMMENT ON FUNCTION prm.add_location(bigint, text, text, text) IS
    'Add a location to an organization; returns its id. Needs staff.';

CREATE FUNCTION prm.add_provider(org_id bigint, name text)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_add_provider';
COMMENT ON FUNCTION prm.add_provider(bigint, text) IS
    'Add a provider (practitioner) to an organization; returns its id. Needs staff.';

CREATE FUNCTION prm.add_patient(org_id bigint, given_name text, family_name text, phone text,
                                email text DEFAULT NULL, timezone text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_add_patient';
COMMENT ON FUNCTION prm.add_patient(bigint, text, text, text, text, text) IS
    'Add a patient; the phone is normalised to E.164 with the organization''s region, the time zone validated. Returns the patient id. Needs staff.';

CREATE FUNCTION prm.book_appointment(org_id bigint, patient_id bigint, provider_id bigint,
                                     starts_at timestamptz, ends_at timestamptz)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_book_appointment';
COMMENT ON FUNCTION prm.book_appointment(bigint, bigint, bigint, timestamptz, timestamptz) IS
    'Book an appointment; a provider cannot be double-booked (23P01 names the conflicting appointment). Free slots it covers become busy. Needs staff.';

CREATE FUNCTION prm.cancel_appointment(org_id bigint, appointment_id bigint,
                                       reason text DEFAULT NULL)
RETURNS bigint
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_cancel_appointment';
COMMENT ON FUNCTION prm.cancel_appointment(bigint, bigint, text) IS
    'Cancel an appointment: its time becomes a free slot, whose id is returned. Needs staff.';

CREATE FUNCTION prm.set_appointment_status(org_id bigint, appointment_id bigint, status text)
RETURNS void
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'prm_set_appointment_status';
COMMENT ON FUNCTION prm.set_appointment_status(bigint, bigint, text) IS
    'Record what became of an appointment: arrived, checked-in, fulfilled, noshow or entered-in-error (use cancel_appointment to cancel). Needs staff.';
