-- The parts of a Krenalis database that the mirror reads (SPEC §11.1), written for the tests:
-- the tables, columns, enums and constraints the mirror depends on. psql -v schema=NAME.
CREATE SCHEMA IF NOT EXISTS :"schema";
SET search_path TO :"schema";

CREATE TYPE connection_role AS ENUM ('Source', 'Destination');
CREATE TYPE connection_strategy AS ENUM ('Conversion', 'Fusion', 'Isolation', 'Preservation');
CREATE TYPE access_key_type AS ENUM ('API', 'MCP');
CREATE TYPE notification_name AS ENUM (
    'CreateOrganization', 'SetOrganizationStatus', 'UpdateOrganization', 'DeleteOrganization',
    'CreateWorkspace', 'RenameWorkspace', 'UpdateWorkspace', 'DeleteWorkspace',
    'CreateConnection', 'UpdateConnection', 'RenameConnection', 'DeleteConnection',
    'CreateAccessKey', 'DeleteAccessKey', 'CreateEventWriteKey', 'DeleteEventWriteKey',
    'SetAccount', 'UpdateWarehouse', 'SetWorkspaceUserSchema', 'ElectLeader');

CREATE TABLE metadata (
    kms_encrypted_api_key_pepper bytea NOT NULL
);

CREATE TABLE organizations (
    id varchar(12) PRIMARY KEY,
    name varchar(60) NOT NULL DEFAULT '',
    enabled boolean NOT NULL DEFAULT true
);

CREATE TABLE workspaces (
    id varchar(12) PRIMARY KEY,
    organization varchar(12) NOT NULL REFERENCES organizations ON DELETE CASCADE,
    name varchar(100) NOT NULL DEFAULT ''
);

CREATE TABLE connections (
    id varchar(12) PRIMARY KEY,
    workspace varchar(12) NOT NULL REFERENCES workspaces ON DELETE CASCADE,
    name varchar(100) NOT NULL DEFAULT '',
    role connection_role NOT NULL,
    strategy connection_strategy,
    settings text NOT NULL DEFAULT '' -- secrets the mirror must never read
);

CREATE TABLE access_keys (
    id varchar(12) PRIMARY KEY,
    organization varchar(12) NOT NULL REFERENCES organizations ON DELETE CASCADE,
    workspace varchar(12) REFERENCES workspaces ON DELETE CASCADE,
    name varchar(100) NOT NULL DEFAULT '',
    type access_key_type NOT NULL,
    hmac bytea NOT NULL UNIQUE CHECK (octet_length(hmac) = 32),
    hint varchar(13) NOT NULL,
    created_at timestamp NOT NULL DEFAULT now()
);

CREATE TABLE event_write_keys (
    connection varchar(12) NOT NULL REFERENCES connections ON DELETE CASCADE,
    key char(32) NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (connection, key)
);

CREATE TABLE notifications (
    version bigint PRIMARY KEY,
    name notification_name NOT NULL,
    payload jsonb NOT NULL
);
