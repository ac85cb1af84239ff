// The single entry to @peculiar/x509. It depends on tsyringe, which needs the
// reflect-metadata polyfill loaded first; importing the library only through
// this module guarantees that order everywhere.
import 'reflect-metadata';

export * from '@peculiar/x509';
