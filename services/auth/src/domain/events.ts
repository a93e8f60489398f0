// The AUTH stream's event types (proto/spool/auth/v1/events.proto).

import { AuthStreams, defineEvents } from "@spool/kit";
import * as pb from "@spool/proto/spool/auth/v1/events.js";

/** Every event of the AUTH stream; the type header is "spool.auth.v1." + the short name. */
export const AuthEvents = defineEvents(
  {
    OrganizationCreated: pb.OrganizationCreated,
    OrganizationSlugClaimed: pb.OrganizationSlugClaimed,
    EmailClaimed: pb.EmailClaimed,
    UserCreated: pb.UserCreated,
    UserRolesChanged: pb.UserRolesChanged,
    PasswordChanged: pb.PasswordChanged,
    UserDisabled: pb.UserDisabled,
    UserEnabled: pb.UserEnabled,
    UserDeleted: pb.UserDeleted,
    UserPasswordReset: pb.UserPasswordReset,
    SessionStarted: pb.SessionStarted,
    RefreshTokenRotated: pb.RefreshTokenRotated,
    RefreshTokenReused: pb.RefreshTokenReused,
    SessionRevoked: pb.SessionRevoked,
    ServiceAccountCreated: pb.ServiceAccountCreated,
    ServiceAccountDisabled: pb.ServiceAccountDisabled,
    ServiceAccountEnabled: pb.ServiceAccountEnabled,
    ServiceAccountDeleted: pb.ServiceAccountDeleted,
    ServiceAccountSecretRotated: pb.ServiceAccountSecretRotated,
    SigningKeyCreated: pb.SigningKeyCreated,
    SigningKeyActivated: pb.SigningKeyActivated,
    SigningKeyRetired: pb.SigningKeyRetired,
    LoginSucceeded: pb.LoginSucceeded,
    LoginFailed: pb.LoginFailed,
    LoginLockedOut: pb.LoginLockedOut,
    OAuthStateConsumed: pb.OAuthStateConsumed,
    SignupPolicyChanged: pb.SignupPolicyChanged,
  },
  { prefix: "spool.auth.v1." },
);

// One codec per type, to create events (and for code outside the domain that looks at one type).
export const {
  OrganizationCreated,
  OrganizationSlugClaimed,
  EmailClaimed,
  UserCreated,
  UserRolesChanged,
  PasswordChanged,
  UserDisabled,
  UserEnabled,
  UserDeleted,
  UserPasswordReset,
  SessionStarted,
  RefreshTokenRotated,
  RefreshTokenReused,
  SessionRevoked,
  ServiceAccountCreated,
  ServiceAccountDisabled,
  ServiceAccountEnabled,
  ServiceAccountDeleted,
  ServiceAccountSecretRotated,
  SigningKeyCreated,
  SigningKeyActivated,
  SigningKeyRetired,
  LoginSucceeded,
  LoginFailed,
  LoginLockedOut,
  OAuthStateConsumed,
  SignupPolicyChanged,
} = AuthEvents.types;

/**
 * The AUTH stream and its subjects, one per aggregate. Defined in the kit, which
 * every service's revocation feed reads it with; auth alone creates it.
 */
export { AuthStreams } from "@spool/kit";
export const Subjects = AuthStreams.AUTH.subjects;
export const AUTH_STREAM = AuthStreams.AUTH.definition();
