// The AUTH stream's event types (proto/spool/auth/v1/events.proto).

import { AuthStreams, eventType } from "@spool/kit";
import * as pb from "@spool/proto/spool/auth/v1/events.js";

const t = <T>(name: string, fns: Parameters<typeof eventType<T>>[1]) =>
  eventType<T>(`spool.auth.v1.${name}`, fns);

export const OrganizationCreated = t("OrganizationCreated", pb.OrganizationCreated);
export const OrganizationSlugClaimed = t("OrganizationSlugClaimed", pb.OrganizationSlugClaimed);
export const EmailClaimed = t("EmailClaimed", pb.EmailClaimed);
export const UserCreated = t("UserCreated", pb.UserCreated);
export const UserRolesChanged = t("UserRolesChanged", pb.UserRolesChanged);
export const PasswordChanged = t("PasswordChanged", pb.PasswordChanged);
export const UserDisabled = t("UserDisabled", pb.UserDisabled);
export const UserEnabled = t("UserEnabled", pb.UserEnabled);
export const UserDeleted = t("UserDeleted", pb.UserDeleted);
export const UserPasswordReset = t("UserPasswordReset", pb.UserPasswordReset);
export const SessionStarted = t("SessionStarted", pb.SessionStarted);
export const RefreshTokenRotated = t("RefreshTokenRotated", pb.RefreshTokenRotated);
export const RefreshTokenReused = t("RefreshTokenReused", pb.RefreshTokenReused);
export const SessionRevoked = t("SessionRevoked", pb.SessionRevoked);
export const ServiceAccountCreated = t("ServiceAccountCreated", pb.ServiceAccountCreated);
export const ServiceAccountDisabled = t("ServiceAccountDisabled", pb.ServiceAccountDisabled);
export const ServiceAccountEnabled = t("ServiceAccountEnabled", pb.ServiceAccountEnabled);
export const ServiceAccountDeleted = t("ServiceAccountDeleted", pb.ServiceAccountDeleted);
export const ServiceAccountSecretRotated = t("ServiceAccountSecretRotated", pb.ServiceAccountSecretRotated);
export const SigningKeyCreated = t("SigningKeyCreated", pb.SigningKeyCreated);
export const SigningKeyActivated = t("SigningKeyActivated", pb.SigningKeyActivated);
export const SigningKeyRetired = t("SigningKeyRetired", pb.SigningKeyRetired);
export const LoginSucceeded = t("LoginSucceeded", pb.LoginSucceeded);
export const LoginFailed = t("LoginFailed", pb.LoginFailed);
export const LoginLockedOut = t("LoginLockedOut", pb.LoginLockedOut);
export const OAuthStateConsumed = t("OAuthStateConsumed", pb.OAuthStateConsumed);
export const SignupPolicyChanged = t("SignupPolicyChanged", pb.SignupPolicyChanged);

/**
 * The AUTH stream and its subjects, one per aggregate. Defined in the kit, which
 * every service's revocation feed reads it with; auth alone creates it.
 */
export { AuthStreams } from "@spool/kit";
export const Subjects = AuthStreams.AUTH.subjects;
export const AUTH_STREAM = AuthStreams.AUTH.definition();
